"""What the PyTorch baselines of `unpersonal-train bench` share: their command line, threads
and seed, the AdamW groups of the trainer (weight decay on parameters with ndim >= 2 only),
and the timing and report of the steps."""

import argparse
import json
import time

import torch


def arguments(description, batch):
    """The baselines' command line, with `batch` as the default batch size."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (timed after torch.cuda.synchronize)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    return args


def training_step(params, lr, ema_decay, loss_of):
    """One training step as the trainer's step graph runs it: `loss_of()` forward, backward,
    AdamW on `params`, then their EMA. Returns the step, which returns the loss."""
    opt = adamw(params, lr)
    ema = [q.detach().clone() for q in params]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_of()
        loss.backward()
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [q.detach() for q in params], 1.0 - ema_decay)
        return loss

    return step


def adamw(params, lr):
    """AdamW as the trainer's step graph runs it."""
    return torch.optim.AdamW(
        [
            {"params": [q for q in params if q.ndim >= 2], "weight_decay": 0.05},
            {"params": [q for q in params if q.ndim < 2], "weight_decay": 0.0},
        ],
        lr=lr,
        betas=(0.9, 0.999),
        eps=1e-8,
    )


def report(name, args, step, parameters):
    """Runs `step` (returning the loss) `args.warmup` times untimed and `args.steps` times
    timed, and prints images per second and milliseconds per step."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    t0 = time.perf_counter()
    loss = None
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - t0
    ms_per_step = elapsed * 1000.0 / max(args.steps, 1)
    images_per_second = args.batch * args.steps / elapsed if elapsed > 0 else float("nan")
    if args.json:
        print(json.dumps({"model": name, "batch": args.batch, "steps": args.steps,
                          "images_per_second": images_per_second, "ms_per_step": ms_per_step,
                          "threads": args.threads, "device": args.device,
                          "torch_version": torch.__version__, "parameters": parameters}))
    else:
        print(f"torch {torch.__version__}, device {args.device}, threads {args.threads}")
        print(f"parameters: {parameters}")
        print(f"batch {args.batch}, warmup {args.warmup}, timed steps {args.steps}")
        if loss is not None:
            print(f"final loss: {loss.item():.4f}")
        print(f"{images_per_second:.1f} images/s, {ms_per_step:.2f} ms/step")
