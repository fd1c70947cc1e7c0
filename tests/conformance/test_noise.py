"""Checks noise.py bit for bit against values the Rust runtime produced.

Run: python tests/conformance/test_noise.py   (NumPy only; exit status 1 on any mismatch)

Expected values are float32 bit patterns printed by `solver::noise`'s exact code
(rand 0.9.5, rand_chacha 0.9.0, rand_distr 0.5.1, on x86_64 Linux).
"""

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import noise as N  # noqa: E402

# First 8 values of noise(seed, id, ·) (any shape: the fill is row-major).
FIRST8 = {
    (0, 0): "3e50638e bfb0c35c bf620ea4 3f33f4c4 3dbb9377 bf6835b7 bfa7c30f 3d5bcd17",
    (0, 1): "bf195f45 be999db9 be8aca9f 3f9df3c1 bf5ed48d bf73ba2b bec0e176 bf5e6e9a",
    (1234, 7): "3fe974e5 be77312c 3e32abb1 bfc25de8 3d1aa8db 3e6c66ab bfb97d4d be36fc39",
    (2**64 - 1, 123456789): "bedef66c 3f427dcd 3f4230ab bfdc8afe 3e93dbd9 bf24591b 3fcb660a 3fac4187",
}

# noise(7, 3, [1, 1, n]): flat index -> value, one sample for each path through the ziggurat
# (the first draw of each sample is not accepted at once). "tailK" = tail loop ran K times;
# "-"/"+" = sign of u. "fast" after a rejection = the retry draw was accepted at once
# ("fast0": in the base layer).
BRANCHES = {
    127: ("bddeb55f", "wedge accepted, top layer (i = 255)"),
    303: ("3dfc76c4", "wedge rejected, then fast"),
    335: ("40144b5e", "wedge accepted"),
    5779: ("bf4ebf55", "wedge rejected twice, then fast"),
    11559: ("bda1df20", "wedge rejected, then wedge accepted at i = 255"),
    15284: ("c079d37c", "tail1-"),
    17437: ("4073b510", "tail1+"),
    20587: ("406e9abe", "tail2+"),
    75360: ("3e93d001", "wedge rejected, then wedge accepted"),
    117633: ("40790822", "wedge rejected, then tail1+"),
    146768: ("be1c051e", "wedge rejected, then fast0"),
    211745: ("c07eec28", "tail2-"),
    769376: ("c07e166b", "wedge rejected, then tail1-"),
    1240496: ("3f0eb483", "wedge rejected twice, then wedge accepted"),
}

# ChaCha20 with the all-zero key (seed 0, id 0), block 0, words 0..3: the classic ChaCha20
# zero-key/zero-nonce test vector (bytes 76 b8 e0 ad a0 f1 3d 90 ...); block 4, words 0..3
# (the second 4-block buffer of ChaCha20Rng), as the Rust generator returned them.
CHACHA_ZERO_KEY = {0: "ade0b876 903df1a0 e56a5d40 28bd8653", 4: "7488a6e5 adc5472b dfd459fb b11dfd76"}

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def hexes(s):
    return np.array([int(h, 16) for h in s.split()], dtype=np.uint32)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).ravel().view(np.uint32)


def main():
    # Tables: shape and the defining recurrence (Doornik's ZIGNOR, as rand's ziggurat_tables.py:
    # x0 = v / f(r), x1 = r, x_i = f⁻¹(v / x_{i-1} + f(x_{i-1})), x256 = 0, F_i = f(x_i),
    # f(x) = exp(-x²/2), r = 3.6541528853610088, v = 0.00492867323399). The shipped tables
    # are rand_distr's literals; recomputing them depends on the libm, hence the tolerance.
    X, F, R = N.ZIG_NORM_X, N.ZIG_NORM_F, N.ZIG_NORM_R
    f = lambda t: math.exp(-t * t / 2.0)  # noqa: E731
    v = 0.00492867323399
    x = [v / f(R), R]
    for _ in range(2, 256):
        x.append(math.sqrt(-2.0 * math.log(v / x[-1] + f(x[-1]))))
    x.append(0.0)
    check(X.shape == F.shape == (257,) and X[1] == R and X[256] == 0.0 and F[256] == 1.0
          and bool(np.all(np.diff(X) < 0)), "ziggurat tables: 257 entries, X[1] = R, decreasing")
    check(np.allclose(X, x, rtol=1e-12, atol=0) and np.allclose(F, [f(t) for t in x], rtol=1e-12, atol=0),
          "ziggurat tables follow the ZIGNOR recurrence")

    # ChaCha20 key stream.
    for block, want in CHACHA_ZERO_KEY.items():
        got = N._chacha20_words([N._key_words(0, 0)], block, 1)[0, :4]
        check(np.array_equal(got, hexes(want)), f"ChaCha20 zero key, block {block}, words 0..3")

    # First values for several (seed, id), in two shapes.
    for (seed, sid), want in FIRST8.items():
        want = hexes(want)
        check(np.array_equal(bits(N.noise(seed, sid, [1, 2, 4])), want), f"noise({seed}, {sid}) first 8")
        check(np.array_equal(bits(N.noise(seed, sid, [3, 5, 7]))[:8], want),
              f"noise({seed}, {sid}) first 8 of [3, 5, 7]")

    # Every path through the ziggurat, by index in one long stream.
    n = max(BRANCHES) + 1
    z = bits(N.noise(7, 3, [1, 1, n]))
    for k, (want, path) in BRANCHES.items():
        check(int(z[k]) == int(want, 16), f"noise(7, 3)[{k}] ({path})")

    # noise_batch stacks noise; ids are u64 (taken mod 2^64 like seed).
    b = N.noise_batch(42, [5, 0, 2**64 - 1], [2, 3, 4])
    check(b.shape == (3, 2, 3, 4) and b.dtype == np.float32, "noise_batch shape and dtype")
    check(all(np.array_equal(bits(b[k]), bits(N.noise(42, i, [2, 3, 4])))
              for k, i in enumerate([5, 0, 2**64 - 1])), "noise_batch rows equal noise")
    check(np.array_equal(bits(N.noise(-1, 123456789, [1, 1, 8])), hexes(FIRST8[(2**64 - 1, 123456789)])),
          "seed -1 is seed 2^64 - 1")

    # The draw buffer grows on demand: start from 8 draws, compare with the precomputed path.
    key = N._key_words(7, 3)
    small = N._normals(N._Stream(key, N._u64_stream([key], 0, 8)[0]), 20000).astype(np.float32)
    check(np.array_equal(bits(small), z[:20000]), "stream extension gives the same values")

    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
