#!/usr/bin/env python3
"""Writes the shipped demo reference sample: the first N training images of each Fashion-MNIST
class as PNGs plus a filelist (`images/<i>.png l0 … l9`, one-hot labels), so that
`unpersonal generate` runs on a fresh machine without a data download.

Usage: python3 scripts/reference_sample.py [PER_CLASS] [OUT_DIR]
(defaults: 10, models/fashion-mnist/reference; data from /usr/share/datasets/fashion-mnist)
"""
import gzip, os, struct, sys, zlib

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx(name):
    path = os.path.join(DATA, name)
    opener = open if os.path.exists(path) else gzip.open
    with opener(path if os.path.exists(path) else path + ".gz", "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def png(pixels, h, w):
    rows = b"".join(b"\x00" + pixels[r * w : (r + 1) * w] for r in range(h))
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def main():
    per_class = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    out = sys.argv[2] if len(sys.argv) > 2 else "models/fashion-mnist/reference"
    (n, h, w), images = read_idx("train-images-idx3-ubyte")
    _, labels = read_idx("train-labels-idx1-ubyte")
    taken, lines = [0] * 10, []
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    for i in range(n):
        label = labels[i]
        if taken[label] == per_class:
            continue
        taken[label] += 1
        name = f"images/train-{i:05d}.png"
        with open(os.path.join(out, name), "wb") as f:
            f.write(png(images[i * h * w : (i + 1) * h * w], h, w))
        lines.append(name + "".join(" 1" if k == label else " 0" for k in range(10)))
        if sum(taken) == 10 * per_class:
            break
    with open(os.path.join(out, "filelist.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
