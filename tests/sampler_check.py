"""Reimplements Unpersonal's sampler from docs/bundle.md alone (onnxruntime + numpy): the
partner path.

usage: python sampler_check.py BUNDLE_DIR CASE_DIR
  Checks that it reproduces the runtime's images for the same explicit noise within 1e-3.
  CASE_DIR holds case.json ({"solver", "steps", "sigma_min", "sigma_max", "rho", "guidance",
  "guidance_interval": [lo, hi] or null})
  and float32 little-endian arrays: noise.f32 [n, C, H, W], condition.f32 [n, D], and
  runtime.f32 [n, C, H, W] (the runtime's result in model space). Exit status 0 when they agree.

usage: python sampler_check.py --speed BUNDLE_DIR UNPERSONAL [--images N] [--threads T]
  Times this sampler (onnxruntime with T threads, default: every core) and the runtime
  (`UNPERSONAL bench --backend ort`, its default layout on every core) on the same work: N candidates (N/candidates_per_image reference images of the shipped sample) in
  one batch at the bundle's default solver, steps and guidance; prints both and their ratio.
"""
import argparse, json, os, subprocess, sys, time

import numpy as np
import onnxruntime as ort


def schedule(n, sigma_min, sigma_max, rho):
    i = np.arange(n, dtype=np.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + i / max(n - 1, 1) * (lo - hi)) ** rho
    return np.append(sigmas, 0.0).astype(np.float32)


def solve(solver, guided, x, sigmas):
    """Runs `solver` ("heun" or "dpmpp-2m") from x = sigma_0 * noise through `sigmas`."""
    previous = None  # dpmpp-2m: (D_{i-1}, h_{i-1})
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        if solver == "heun":
            h = t_next - t
            d = (x - guided(x, t)) / t
            x_next = x + h * d
            if t_next > 0:
                d2 = (x_next - guided(x_next, t_next)) / t_next
                x_next = x + h * (np.float32(0.5) * d + np.float32(0.5) * d2)
            x = x_next
        elif solver == "dpmpp-2m":
            denoised = guided(x, t)
            h = np.log(np.float64(t) / np.float64(t_next)) if t_next > 0 else np.inf
            target = denoised
            if previous is not None and t_next > 0:
                a = h / (2.0 * previous[1])
                target = np.float32(1.0 + a) * denoised - np.float32(a) * previous[0]
            ratio = np.float32(np.float64(t_next) / np.float64(t))
            x = ratio * x + (np.float32(1.0) - ratio) * target
            previous = (denoised, h)
        else:
            raise ValueError(f"unknown solver {solver}")
    return x


class Sampler:
    """The bundle's denoiser (and guide) with classifier-free guidance, on onnxruntime."""

    def __init__(self, bundle_dir, threads=0):
        self.bundle = json.load(open(os.path.join(bundle_dir, "bundle.json")))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        models = self.bundle["models"]
        load = lambda role: ort.InferenceSession(os.path.join(bundle_dir, models[role]["file"]), options)
        self.load = load
        self.denoiser = load("denoiser")
        guide = models.get("guide")
        self.guide = load("guide") if guide is not None and guide["file"] != models["denoiser"]["file"] else None
        img = self.bundle["image"]
        self.shape = (img["channels"], img["height"], img["width"])

    def _call(self, model, x, sigma, c, mask):
        feed = {"x": x, "sigma": np.full(len(x), sigma, np.float32), "condition": c, "condition_mask": mask}
        return model.run(["denoised"], feed)[0]

    def sample(self, noise, cond, solver, steps, sigma_min, sigma_max, rho, guidance, interval=None):
        """Guidance weight `guidance` at lo < sigma <= hi of `interval` (all sigmas when None);
        the conditional model alone elsewhere."""
        n = len(noise)
        zeros = np.zeros_like(cond)

        def guided(x, sigma):
            if interval is not None and not (interval[0] < float(sigma) <= interval[1]):
                return self._call(self.denoiser, x, sigma, cond, np.ones(n, np.float32))
            w = np.float32(guidance)
            if self.guide is None:
                both = self._call(self.denoiser, np.concatenate([x, x]), sigma, np.concatenate([cond, zeros]),
                                  np.concatenate([np.ones(n, np.float32), np.zeros(n, np.float32)]))
                d_c, d_u = both[:n], both[n:]
            else:
                d_c = self._call(self.denoiser, x, sigma, cond, np.ones(n, np.float32))
                d_u = self._call(self.guide, x, sigma, zeros, np.zeros(n, np.float32))
            return d_u + w * (d_c - d_u)

        sigmas = schedule(steps, sigma_min, sigma_max, rho)
        return solve(solver, guided, noise * sigmas[0], sigmas)


def check(bundle_dir, case_dir):
    case = json.load(open(os.path.join(case_dir, "case.json")))
    sampler = Sampler(bundle_dir)
    read = lambda name, cols: np.fromfile(os.path.join(case_dir, name), dtype="<f4").reshape(-1, *cols)
    spec = next(t for t in sampler.bundle["models"]["denoiser"]["inputs"] if t["name"] == "condition")
    noise, expected = read("noise.f32", sampler.shape), read("runtime.f32", sampler.shape)
    cond = read("condition.f32", [spec["shape"][1]])
    solver = case.get("solver", "heun")
    x = sampler.sample(noise, cond, solver, case["steps"], case["sigma_min"], case["sigma_max"], case["rho"], case["guidance"],
                       case.get("guidance_interval"))
    diff = float(np.abs(x - expected).max())
    print(f"{len(noise)} images, {solver} {case['steps']} steps: max |python - runtime| = {diff:.3g}")
    return 0 if diff <= 1e-3 else 1


def speed(bundle_dir, unpersonal, images, threads):
    sampler = Sampler(bundle_dir, threads)
    p = {"solver": "heun", "steps": 18, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, "guidance": 1.3,
         "candidates_per_image": 32, **sampler.bundle.get("sampler", {})}
    m = p["candidates_per_image"]
    references = max(images // m, 1)
    # Conditions: the features model on the shipped reference sample, as the runtime computes them.
    from PIL import Image
    ref_dir = os.path.join(bundle_dir, "reference")
    lines = open(os.path.join(ref_dir, "filelist.txt")).read().split("\n")[:references]
    norm = sampler.bundle["image"]["normalization"]
    pixels = np.stack([np.asarray(Image.open(os.path.join(ref_dir, l.split()[0])), np.float32).reshape(sampler.shape) for l in lines])
    features = sampler.load("features").run(["features"], {"image": ((pixels / 255 - norm["mean"]) / norm["std"]).astype(np.float32)})[0]
    cond = np.repeat(features, m, axis=0)
    noise = np.random.default_rng(0).standard_normal((len(cond), *sampler.shape), dtype=np.float32)
    run = lambda: sampler.sample(noise, cond, p["solver"], p["steps"], p["sigma_min"], p["sigma_max"], p["rho"], p["guidance"],
                                 p.get("guidance_interval"))
    run_steps = p["steps"]
    p["steps"] = 1
    run()  # warm-up at this batch size
    p["steps"] = run_steps
    start = time.perf_counter()
    run()
    python_rate = len(cond) / (time.perf_counter() - start)
    out = subprocess.run([unpersonal, "bench", "--bundle", bundle_dir, "--backend", "ort", "--json",
                          "--images", str(references), "--batches", "1", "--seconds", "0.2", "--references", "1000",
                          "--checks", "16", "--gemm", "128"], check=True, capture_output=True, text=True)
    generation = json.loads(out.stdout)["generation"]
    runtime_rate = generation["images_per_s"]
    print(json.dumps({"candidates": len(cond), "solver": p["solver"], "steps": p["steps"], "python_threads": threads,
                      "runtime_jobs": generation["jobs"],
                      "onnxruntime": ort.__version__, "python_images_per_s": python_rate,
                      "runtime_images_per_s": runtime_rate, "runtime_over_python": runtime_rate / python_rate}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--speed":
        a = argparse.ArgumentParser(description="partner path vs runtime speed")
        a.add_argument("--speed", nargs=2, metavar=("BUNDLE_DIR", "UNPERSONAL"))
        a.add_argument("--images", type=int, default=32)
        a.add_argument("--threads", type=int, default=os.cpu_count())
        args = a.parse_args()
        sys.exit(speed(args.speed[0], args.speed[1], args.images, args.threads))
    sys.exit(check(sys.argv[1], sys.argv[2]))
