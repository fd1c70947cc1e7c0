#!/usr/bin/env python3
"""Plots a run's JSON log (RUN/log.jsonl, written by unpersonal-train) to a PNG: the training
loss (mean over each logging window) and, when present, the validation loss per noise level.

Usage: python scripts/plot_training.py RUN/log.jsonl OUT.png
Needs matplotlib (`.venv/bin/pip install matplotlib`; not a dependency of the product).
"""
import json, sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(log_path, out_path):
    train, evals = [], []
    for line in open(log_path):
        row = json.loads(line)
        if "loss" in row:
            train.append((row["step"], row["loss"]))
        elif "eval" in row and "val_loss_by_sigma" in row["eval"]:
            evals.append((row["step"], row["eval"]["val_loss_by_sigma"], row["eval"]["val_loss"]))
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.plot(*zip(*train), lw=1)
    ax.set(xlabel="step", ylabel="training loss (EDM-weighted)", yscale="log", title="training loss")
    ax.grid(alpha=0.3)
    if evals:
        ax = axes[0][1]
        steps = [s for s, _, _ in evals]
        for sigma in sorted(evals[0][1], key=float):
            ax.plot(steps, [by[sigma] for _, by, _ in evals], marker="o", ms=3, label=f"σ = {sigma}")
        ax.plot(steps, [mean for _, _, mean in evals], "k--", label="mean")
        ax.set(xlabel="step", ylabel="validation loss (EMA weights)", yscale="log", title="held-out loss per noise level")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
