"""Checks a sampler's output against the conformance kit (or two outputs against each other).

usage: python check.py CASE_DIR OUT_DIR [--exact]
  CASE_DIR is a case of the kit (e.g. tests/conformance/expected/dpmpp-2m) or another output
  directory; OUT_DIR holds what the implementation under test wrote, in the layout of
  `unpersonal sample`: model_space.npy [n, C, H, W] float32, images/NNNNNN.png (row n's 8-bit
  pixels) and, optionally, conditions.npy [sources, D] float32.

  Without --exact the differences must lie within the case's tolerances in kit.json (the
  agreement of two faithful implementations on different ONNX engines, measured; see
  docs/bundle.md, "Conformance"). With --exact the 8-bit pixels must be identical.
  Prints the measured differences as one JSON line; exit status 0 when they pass.
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image


def pixels(out_dir, rows):
    images = []
    for i in range(rows):
        path = os.path.join(out_dir, "images", f"{i:06d}.png")
        if not os.path.isfile(path):
            raise SystemExit(f"{path} is missing: {rows} rows are expected")
        a = np.asarray(Image.open(path))
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(images).astype(np.int16)


def tolerances(case_dir):
    kit = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(case_dir))), "kit.json")
    name = os.path.basename(os.path.normpath(case_dir))
    return json.load(open(kit))["cases"][name]["tolerance"]


def main():
    parser = argparse.ArgumentParser(description="conformance check")
    parser.add_argument("expected")
    parser.add_argument("actual")
    parser.add_argument("--exact", action="store_true", help="8-bit pixels must be identical")
    args = parser.parse_args()

    expected = np.load(os.path.join(args.expected, "model_space.npy"))
    actual = np.load(os.path.join(args.actual, "model_space.npy"))
    if actual.shape != expected.shape or actual.dtype != np.float32:
        raise SystemExit(f"model_space.npy is {actual.dtype} {actual.shape}; expected float32 {expected.shape}")
    if not np.isfinite(actual).all():
        raise SystemExit("model_space.npy holds NaN or infinite values")
    p_expected, p_actual = pixels(args.expected, len(expected)), pixels(args.actual, len(expected))
    off = np.abs(p_actual - p_expected)
    result = {
        "rows": len(expected),
        "model_space_max_abs": float(np.abs(actual - expected).max()),
        "pixels_compared": int(off.size),
        "pixels_off": int((off > 0).sum()),
        "pixels_max_abs": int(off.max()),
        "pixels_off_fraction": float((off > 0).mean()),
    }
    conditions = os.path.join(args.actual, "conditions.npy")
    if os.path.isfile(conditions):
        c = np.load(conditions)
        e = np.load(os.path.join(args.expected, "conditions.npy"))
        if c.shape != e.shape:
            raise SystemExit(f"conditions.npy is {c.shape}; expected {e.shape}")
        result["conditions_max_abs"] = float(np.abs(c - e).max())

    if args.exact:
        failures = [] if result["pixels_off"] == 0 else [f"{result['pixels_off']} pixels differ"]
    else:
        t = tolerances(args.expected)
        failures = [f"{key} {result[key]} > {t[key]}" for key in t if key in result and result[key] > t[key]]
    result["passed"] = not failures
    print(json.dumps(result))
    if failures:
        print("FAILED: " + "; ".join(failures), file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
