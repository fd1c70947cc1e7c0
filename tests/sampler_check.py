"""Reimplements Unpersonal's sampler from docs/bundle.md alone (onnxruntime + numpy) and checks
that it reproduces the runtime's images for the same explicit noise within 1e-3.

usage: python sampler_check.py BUNDLE_DIR CASE_DIR
CASE_DIR holds case.json ({"steps", "sigma_min", "sigma_max", "rho", "guidance"}) and float32
little-endian arrays: noise.f32 [n, C, H, W], condition.f32 [n, D], and runtime.f32 [n, C, H, W]
(the runtime's result in model space). Exit status 0 when they agree.
"""
import json, os, sys

import numpy as np
import onnxruntime as ort


def schedule(n, sigma_min, sigma_max, rho):
    i = np.arange(n, dtype=np.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + i / max(n - 1, 1) * (lo - hi)) ** rho
    return np.append(sigmas, 0.0).astype(np.float32)


def main(bundle_dir, case_dir):
    bundle = json.load(open(os.path.join(bundle_dir, "bundle.json")))
    case = json.load(open(os.path.join(case_dir, "case.json")))
    img = bundle["image"]
    shape = (img["channels"], img["height"], img["width"])
    load = lambda role: ort.InferenceSession(os.path.join(bundle_dir, bundle["models"][role]["file"]))
    read = lambda name, cols: np.fromfile(os.path.join(case_dir, name), dtype="<f4").reshape(-1, *cols)
    denoiser = load("denoiser")
    guide = bundle["models"].get("guide")
    separate_guide = guide is not None and guide["file"] != bundle["models"]["denoiser"]["file"]
    guide_model = load("guide") if separate_guide else None
    noise, expected = read("noise.f32", shape), read("runtime.f32", shape)
    spec = next(t for t in bundle["models"]["denoiser"]["inputs"] if t["name"] == "condition")
    cond = read("condition.f32", [spec["shape"][1]])
    n, w = len(noise), np.float32(case["guidance"])

    def call(model, x, sigma, c, mask):
        rows = len(x)
        feed = {"x": x, "sigma": np.full(rows, sigma, np.float32), "condition": c, "condition_mask": mask}
        return model.run(["denoised"], feed)[0]

    def guided(x, sigma):
        zeros = np.zeros_like(cond)
        if guide_model is None:
            both = call(denoiser, np.concatenate([x, x]), sigma, np.concatenate([cond, zeros]),
                        np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)]))
            d_c, d_u = both[:n], both[n:]
        else:
            d_c = call(denoiser, x, sigma, cond, np.ones(n, np.float32))
            d_u = call(guide_model, x, sigma, zeros, np.zeros(n, np.float32))
        return d_u + w * (d_c - d_u)

    sigmas = schedule(case["steps"], case["sigma_min"], case["sigma_max"], case["rho"])
    x = noise * sigmas[0]
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        h = t_next - t
        d = (x - guided(x, t)) / t
        x_next = x + h * d
        if t_next > 0:
            d2 = (x_next - guided(x_next, t_next)) / t_next
            x_next = x + h * (np.float32(0.5) * d + np.float32(0.5) * d2)
        x = x_next
    diff = float(np.abs(x - expected).max())
    print(f"{n} images, {case['steps']} steps: max |python - runtime| = {diff:.3g}")
    return 0 if diff <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
