"""A partner's sampler for Unpersonal bundles, written from docs/bundle.md alone (onnxruntime,
NumPy and Pillow): the reference decoding, the pseudo-conditions, the noise generator
(noise.py), the schedule, guidance and the three solvers with the arithmetic the page states
(`distilled`: the bundle's student, unguided, in its own steps).

usage: python sampler.py sample BUNDLE_DIR --reference FILELIST --out DIR [--sources N]
           [--noise FILE.npy | --seed S] [--round T] [--solver heun|dpmpp-2m|distilled] [--steps N]
           [--guidance W] [--guidance-interval LO,HI] [--candidates K] [--rounds R]
  Draws round T's candidates for the first N reference images, like `unpersonal sample`, and
  writes DIR in its layout: conditions.npy, noise.npy, model_space.npy, images/NNNNNN.png.

usage: python sampler.py decode FILELIST C H W OUT.npy
  Decodes every image of a filelist by the page's rules into uint8 [n, C, H, W].

usage: python sampler.py speed BUNDLE_DIR UNPERSONAL [--images N] [--threads T]
           [--backends tract,ort] [--repeat R] [--solver S]
  Times this sampler (onnxruntime with T threads, default: every core) and the runtime
  (`UNPERSONAL bench --backend B` for each B) on the same work, R times interleaved: N
  candidates at the solver's defaults (default: the bundle's); prints the rates and the
  runtime's ratio to this sampler, run by run, as JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise as noise_generator  # noqa: E402  (the page's generator, next to this file)

F32 = np.float32
DEFAULTS = {"solver": "heun", "steps": 18, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0,
            "guidance": 1.3, "guidance_interval": None, "candidates_per_image": 32,
            "guidance_decrement": 0.1, "max_rounds": 3}


# ---- Reference images ------------------------------------------------------------------------

def decode(path, channels, height, width):
    """An image file as uint8 [C, H, W], the page's "Reference images" rules."""
    image = Image.open(path)
    if image.size != (width, height):
        raise ValueError(f"{path}: {image.size[0]}×{image.size[1]} pixels, the bundle takes {width}×{height}")
    if image.mode == "P":  # a palette: its colours (and alpha, dropped below)
        image = image.convert("RGBA")
    mode = image.mode
    a = np.asarray(image)
    if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit gray: round(v · 255 / 65535)
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
        mode = "L"
    elif mode == "LA":
        a, mode = a[..., 0], "L"
    elif mode == "RGBA":
        a, mode = a[..., :3], "RGB"
    elif mode == "1":
        a, mode = a.astype(np.uint8) * 255, "L"
    if mode not in ("L", "RGB"):
        raise ValueError(f"{path}: PIL mode {image.mode} is not covered by this sampler")
    if channels == 1 and mode == "RGB":  # Rec. 709 luma in integers, rounded half up
        a = (a.astype(np.uint32) @ np.array([2126, 7152, 722], np.uint32) + 5000) // 10000
        a = a.astype(np.uint8)
    elif channels == 3 and mode == "L":
        a = np.repeat(a[..., None], 3, axis=2)
    return a.reshape(height, width, channels).transpose(2, 0, 1)


def read_filelist(path, sources=None):
    """The first `sources` (default: all) image paths of a filelist, or of the filelist.txt of a
    folder (paths relative to the filelist's folder)."""
    if os.path.isdir(path):
        path = os.path.join(path, "filelist.txt")
    root = os.path.dirname(os.path.abspath(path))
    lines = [l.split() for l in open(path).read().splitlines() if l.strip() and not l.startswith("#")]
    sources = len(lines) if sources is None else sources
    if len(lines) < sources:
        raise ValueError(f"{path} names {len(lines)} images, {sources} asked for")
    return [os.path.join(root, l[0]) for l in lines[:sources]]


# ---- The bundle's models -----------------------------------------------------------------------

class Bundle:
    """The bundle's features model, denoiser and (optional) separate guide on onnxruntime."""

    def __init__(self, bundle_dir, threads=0):
        self.dir = bundle_dir
        self.spec = json.load(open(os.path.join(bundle_dir, "bundle.json")))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        models = self.spec["models"]
        self.load = lambda role: ort.InferenceSession(os.path.join(bundle_dir, models[role]["file"]), options)
        self.denoiser = self.load("denoiser")
        self.student = self.load("student") if "student" in models else None
        guide = models.get("guide")
        self.guide = self.load("guide") if guide and guide["file"] != models["denoiser"]["file"] else None
        image = self.spec["image"]
        self.shape = (image["channels"], image["height"], image["width"])
        self.sampler = {**DEFAULTS, **self.spec.get("sampler", {})}

    def normalize(self, pixels):
        n = self.spec["image"]["normalization"]
        return (pixels.astype(F32) / F32(255) - F32(n["mean"])) / F32(n["std"])

    def to_pixels(self, x):
        """round(clamp((x·std + mean)·255, 0, 255)), halves away from zero (all values ≥ 0)."""
        n = self.spec["image"]["normalization"]
        v = np.clip((x * F32(n["std"]) + F32(n["mean"])) * F32(255), F32(0), F32(255))
        whole = np.floor(v)  # v − ⌊v⌋ is exact in float32, so the half is judged exactly
        return (whole + (v - whole >= F32(0.5))).astype(np.uint8)

    def conditions(self, pixels):
        features = self.load("features")
        return features.run(["features"], {"image": self.normalize(pixels)})[0]

    def _call(self, model, x, sigma, c, mask):
        feed = {"x": x, "sigma": np.full(len(x), sigma, F32), "condition": c,
                "condition_mask": np.full(len(x), mask, F32) if np.isscalar(mask) else mask}
        out = model.run(["denoised"], feed)[0]
        if not np.isfinite(out).all():
            raise ValueError("the denoiser returned a NaN or infinite value")
        return out

    def guided(self, x, sigma, cond, w, solver=None):
        """The guided denoiser at σ (float32) with weight w (float32): D_c alone when w is 1;
        the student (always unguided) for the `distilled` solver."""
        n = len(x)
        if solver == "distilled":
            if self.student is None:
                raise ValueError("the bundle has no student (models.student)")
            return self._call(self.student, x, sigma, cond, 1.0)
        if w == F32(1):
            return self._call(self.denoiser, x, sigma, cond, 1.0)
        zeros = np.zeros_like(cond)
        if self.guide is None:
            both = self._call(self.denoiser, np.concatenate([x, x]), sigma, np.concatenate([cond, zeros]),
                              np.concatenate([np.ones(n, F32), np.zeros(n, F32)]))
            d_c, d_u = both[:n], both[n:]
        else:
            d_c = self._call(self.denoiser, x, sigma, cond, 1.0)
            d_u = self._call(self.guide, x, sigma, zeros, 0.0)
        return d_u + w * (d_c - d_u)


# ---- The sampler -------------------------------------------------------------------------------

def schedule(n, sigma_min, sigma_max, rho):
    """σ_0 … σ_{N−1} and σ_N = 0, float64, in the runtime's order of operations."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    last = float(max(n - 1, 1))
    return [(hi + i / last * (lo - hi)) ** rho for i in range(n)] + [0.0]


def combine(*terms):
    """Σ w·image, float32, left to right: w0·a first, then + w·b for each further term."""
    (w0, first), rest = terms[0], terms[1:]
    out = F32(w0) * first
    for w, t in rest:
        out = out + F32(w) * t
    return out


def solve(solver, denoise, noise, sigmas):
    """`heun` or `dpmpp-2m` from x = σ_0·noise through `sigmas` (float64), the page's step 4."""
    x = combine((F32(sigmas[0]), noise))
    previous = None  # dpmpp-2m: (D_{i-1}, h_{i-1})
    for t, t_next in zip(sigmas[:-1], sigmas[1:]):
        if solver == "heun":
            t32, t_next32 = F32(t), F32(t_next)
            h = t_next32 - t32

            def derivative(y, s):
                return combine((F32(1) / s, y), (F32(-1) / s, denoise(y, s)))

            d = derivative(x, t32)
            euler = combine((1, x), (h, d))
            if t_next > 0:
                x = combine((1, x), (F32(0.5) * h, d), (F32(0.5) * h, derivative(euler, t_next32)))
            else:
                x = euler
        elif solver == "dpmpp-2m":
            denoised = denoise(x, F32(t))
            h = np.log(t / t_next) if t_next > 0 else np.inf
            ratio = F32(t_next / t)
            if previous is not None and t_next > 0:
                half_r = 0.5 * h / previous[1]
                a, b = F32(1.0 + half_r), F32(half_r)
                x = combine((ratio, x), ((F32(1) - ratio) * a, denoised), (-(F32(1) - ratio) * b, previous[0]))
            else:
                x = combine((ratio, x), (F32(1) - ratio, denoised))
            previous = (denoised, h)
        elif solver == "distilled":
            ratio = F32(t_next / t)
            x = combine((ratio, x), (F32(1) - ratio, denoise(x, F32(t))))
        else:
            raise ValueError(f"unknown solver {solver}")
    return x


def distilled(p):
    """Settings `p` for the `distilled` solver: the student's steps (unless set), no guidance."""
    return {**p, "solver": "distilled", "steps": p.get("steps") or p["distilled"]["steps"],
            "guidance": 1.0, "guidance_interval": None, "guidance_decrement": 0.0}


def settings(bundle, solver=None, steps=None):
    """The bundle's sampler settings for `solver` (default: the bundle's), `steps` if given."""
    p = dict(bundle.sampler)
    if (solver or p["solver"]) == "distilled":
        return distilled({**p, "steps": steps})
    return {**p, "solver": solver or p["solver"], "steps": steps or p["steps"]}


def sample(bundle, noise, cond, p, round_):
    """Round `round_` of settings `p` from explicit noise [n, C, H, W], row k conditioned on
    row k of cond; the images in model space."""
    w = F32(p["guidance"]) - F32(round_) * F32(p["guidance_decrement"])
    interval = p.get("guidance_interval")

    def denoise(x, sigma):
        inside = interval is None or interval[0] < float(sigma) <= interval[1]
        return bundle.guided(x, sigma, cond, w if inside else F32(1), p["solver"])

    return solve(p["solver"], denoise, noise, schedule(p["steps"], p["sigma_min"], p["sigma_max"], p["rho"]))


def write_png(path, image):
    c = image.shape[0]
    Image.fromarray(image[0] if c == 1 else image.transpose(1, 2, 0), "L" if c == 1 else "RGB").save(path)


def run_sample(args):
    bundle = Bundle(args.bundle)
    p = settings(bundle, args.solver, args.steps)
    if p["solver"] == "distilled" and (args.guidance is not None or args.guidance_interval is not None):
        raise ValueError("--guidance does not apply to the distilled solver: its student learnt the teacher's guidance")
    for key, value in [("guidance", args.guidance),
                       ("guidance_interval", args.guidance_interval), ("candidates_per_image", args.candidates),
                       ("max_rounds", args.rounds)]:
        if value is not None:
            p[key] = value
    k, rounds = p["candidates_per_image"], p["max_rounds"]
    paths = read_filelist(args.reference, args.sources)
    pixels = np.stack([decode(path, *bundle.shape) for path in paths])
    conditions = bundle.conditions(pixels)
    rows = np.repeat(np.arange(args.sources), k)
    if args.noise:
        noise = np.load(args.noise)
    else:  # the runtime's numbering: candidate j of round t of reference r
        ids = [r * k * rounds + args.round * k + j for r in range(args.sources) for j in range(k)]
        noise = noise_generator.noise_batch(args.seed, ids, bundle.shape)
    if noise.shape != (len(rows), *bundle.shape) or noise.dtype != F32:
        raise ValueError(f"noise {noise.shape} {noise.dtype}, expected {(len(rows), *bundle.shape)} float32")
    x = np.concatenate([sample(bundle, noise[i:i + 64], conditions[rows[i:i + 64]], p, args.round)
                        for i in range(0, len(rows), 64)])
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    np.save(os.path.join(args.out, "conditions.npy"), conditions)
    np.save(os.path.join(args.out, "noise.npy"), noise)
    np.save(os.path.join(args.out, "model_space.npy"), x)
    for i, image in enumerate(bundle.to_pixels(x)):
        write_png(os.path.join(args.out, "images", f"{i:06d}.png"), image)
    print(f"{len(x)} candidates ({p['solver']}, {p['steps']} steps, round {args.round}) → {args.out}")
    return 0


def run_speed(args):
    bundle = Bundle(args.bundle, args.threads)
    p = settings(bundle, args.solver)
    m = p["candidates_per_image"]
    references = max(args.images // m, 1)
    paths = read_filelist(os.path.join(args.bundle, "reference"), references)
    cond = np.repeat(bundle.conditions(np.stack([decode(q, *bundle.shape) for q in paths])), m, axis=0)
    noise = np.random.default_rng(0).standard_normal((len(cond), *bundle.shape), dtype=F32)
    sample(bundle, noise, cond, {**p, "steps": 1}, 0)  # warm-up at this batch size
    backends = args.backends.split(",")
    python_rates, runtime_rates, jobs = [], {b: [] for b in backends}, {}
    for _ in range(args.repeat):  # interleaved, so both see the same machine
        start = time.perf_counter()
        sample(bundle, noise, cond, p, 0)
        python_rates.append(len(cond) / (time.perf_counter() - start))
        for backend in backends:
            out = subprocess.run([args.unpersonal, "bench", "--bundle", args.bundle, "--backend", backend, "--json",
                                  "--solver", p["solver"],
                                  "--images", str(references), "--batches", "1", "--seconds", "0.2",
                                  "--references", "1000", "--checks", "16", "--gemm", "128"],
                                 check=True, capture_output=True, text=True)
            generation = json.loads(out.stdout)["generation"]
            runtime_rates[backend].append(generation["images_per_s"])
            jobs[backend] = generation["jobs"]
    print(json.dumps({"candidates": len(cond), "solver": p["solver"], "steps": p["steps"], "python_threads": args.threads,
                      "onnxruntime": ort.__version__, "python_images_per_s": python_rates,
                      "runtime": {b: {"jobs": jobs[b], "images_per_s": runtime_rates[b],
                                      "over_python": [r / q for r, q in zip(runtime_rates[b], python_rates)]}
                                  for b in backends}}))
    return 0


def run_decode(args):
    paths = read_filelist(args.filelist)
    np.save(args.out, np.stack([decode(path, args.c, args.h, args.w) for path in paths]))
    return 0


def interval(text):
    lo, hi = text.split(",")
    return [float(lo), float(hi)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("sample", help="draw candidates like `unpersonal sample`")
    s.add_argument("bundle")
    s.add_argument("--reference", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--sources", type=int, default=1)
    s.add_argument("--noise")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--round", type=int, default=0)
    s.add_argument("--solver", choices=["heun", "dpmpp-2m", "distilled"])
    s.add_argument("--steps", type=int)
    s.add_argument("--guidance", type=float)
    s.add_argument("--guidance-interval", type=interval)
    s.add_argument("--candidates", type=int)
    s.add_argument("--rounds", type=int)
    d = commands.add_parser("decode", help="decode a filelist's images by the page's rules")
    d.add_argument("filelist")
    for name in ("c", "h", "w"):
        d.add_argument(name, type=int)
    d.add_argument("out")
    v = commands.add_parser("speed", help="this sampler's speed next to the runtime's")
    v.add_argument("bundle")
    v.add_argument("unpersonal")
    v.add_argument("--images", type=int, default=32)
    v.add_argument("--threads", type=int, default=os.cpu_count())
    v.add_argument("--backends", default="tract,ort", help="the runtime's backends to time, comma-separated")
    v.add_argument("--repeat", type=int, default=3, help="interleaved runs of each")
    v.add_argument("--solver", choices=["heun", "dpmpp-2m", "distilled"], help="default: the bundle's")
    args = parser.parse_args()
    return {"sample": run_sample, "decode": run_decode, "speed": run_speed}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
