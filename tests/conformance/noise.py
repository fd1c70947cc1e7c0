"""Bit-exact NumPy re-implementation of the runtime's initial noise (`solver::noise`).

The runtime draws the standard-normal starting image of sample `sample_id` under `seed` as

    key = seed.to_le_bytes() ‖ sample_id.to_le_bytes() ‖ [0; 16]        (32 bytes)
    rng = rand_chacha::ChaCha20Rng::from_seed(key)                       (rand_chacha 0.9.0)
    Array3::from_shape_simple_fn([c, h, w], || rng.sample(StandardNormal))  (rand_distr 0.5.1, f32)

This module reproduces that bit for bit with NumPy only. It reads top to bottom in the
order of the written spec ("Initial noise"):

1. `_chacha20_words`: the ChaCha20 key stream as 32-bit words (vectorised over blocks and keys).
2. `_u64_stream`: the 64-bit draws the sampler makes, two words each, low word first.
3. `_fast_path` / `_slow_sample`: rand_distr's ZIGNOR ziggurat for N(0, 1) in float64, the
   common one-draw case vectorised, the rare wedge and tail cases in scalar Python floats.
4. `noise` / `noise_batch`: the float64 → float32 cast and the row-major fill.

The ziggurat tables come verbatim from rand_distr (`ziggurat_normal.json`, next to this file).
"""

import json
import math
import os

import numpy as np

__all__ = ["noise", "noise_batch"]

_MASK32 = 0xFFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF

# --------------------------------------------------------------------------------------------
# 1. ChaCha20 (D. J. Bernstein's original layout: 64-bit block counter, 64-bit nonce)
# --------------------------------------------------------------------------------------------

# "expand 32-byte k" as four little-endian words.
_SIGMA = (0x6170_7865, 0x3320_646E, 0x7962_2D32, 0x6B20_6574)

# The four quarter-rounds of a column round, then of a diagonal round (state word indices).
_QUARTER_ROUNDS = (
    (0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
    (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14),
)


def _key_words(seed, sample_id):
    """The 8 key words: the 32-byte seed read as little-endian u32s."""
    seed &= _MASK64
    sample_id &= _MASK64
    return (seed & _MASK32, seed >> 32, sample_id & _MASK32, sample_id >> 32, 0, 0, 0, 0)


def _rotl(v, n):
    return (v << np.uint32(n)) | (v >> np.uint32(32 - n))


def _chacha20_words(keys, first_block, n_blocks):
    """Key-stream words of blocks first_block .. first_block+n_blocks-1, for each key.

    keys: sequence of L tuples of 8 key words. Returns uint32 array [L, n_blocks * 16]:
    row k is key k's stream, block after block, each block's 16 words in state order.
    State of block b: [sigma0..3, key0..7, b mod 2^32, b >> 32, 0, 0] (the nonce/stream is 0);
    20 rounds (10 column+diagonal double rounds), then the input state is added word-wise.
    """
    keys = np.asarray(keys, dtype=np.uint32).reshape(-1, 8)  # [L, 8]
    n_keys = keys.shape[0]
    counter = np.arange(first_block, first_block + n_blocks, dtype=np.uint64)
    shape = (n_keys, n_blocks)
    init = [np.full(shape, c, dtype=np.uint32) for c in _SIGMA]
    init += [np.broadcast_to(keys[:, j:j + 1], shape).astype(np.uint32) for j in range(8)]
    init += [
        np.broadcast_to((counter & np.uint64(_MASK32)).astype(np.uint32), shape).copy(),
        np.broadcast_to((counter >> np.uint64(32)).astype(np.uint32), shape).copy(),
        np.zeros(shape, dtype=np.uint32),
        np.zeros(shape, dtype=np.uint32),
    ]
    x = [w.copy() for w in init]
    with np.errstate(over="ignore"):  # uint32 additions wrap mod 2^32, as intended
        for _ in range(10):
            for a, b, c, d in _QUARTER_ROUNDS:
                x[a] += x[b]; x[d] = _rotl(x[d] ^ x[a], 16)
                x[c] += x[d]; x[b] = _rotl(x[b] ^ x[c], 12)
                x[a] += x[b]; x[d] = _rotl(x[d] ^ x[a], 8)
                x[c] += x[d]; x[b] = _rotl(x[b] ^ x[c], 7)
        out = np.stack([x[j] + init[j] for j in range(16)], axis=-1)  # [L, n_blocks, 16]
    return out.reshape(n_keys, n_blocks * 16)


# --------------------------------------------------------------------------------------------
# 2. The 64-bit draws
# --------------------------------------------------------------------------------------------
# ChaCha20Rng buffers 4 blocks (64 words) and rand_core's BlockRng::next_u64 returns
# word[j] | word[j+1] << 32. Every draw here is a next_u64 (the ziggurat's bits, the wedge's
# uniform and the tail's Open01 values all are), so reads stay at even word offsets and
# the 64-word buffer is invisible: draw k is word[2k] | word[2k+1] << 32 of the plain key
# stream. (A u64 straddling the buffer end would take word 63 low and the next buffer's word 0
# high: still consecutive words, so the rule holds in that case too.)


def _u64_stream(keys, first_draw, n_draws):
    """Draws first_draw .. first_draw+n_draws-1 (first_draw a multiple of 8) as uint64 [L, n]."""
    assert first_draw % 8 == 0
    n_blocks = -(-n_draws // 8)  # 8 draws per 16-word block
    w = _chacha20_words(keys, first_draw // 8, n_blocks).astype(np.uint64)
    draws = w[:, 0::2] | (w[:, 1::2] << np.uint64(32))
    return draws[:, :n_draws]


class _Stream:
    """One key's draws, extended by whole blocks on demand (for the scalar path)."""

    def __init__(self, key, draws):
        self.key = key
        self.draws = draws  # uint64, draws 0 .. len-1 of this key
        self.pos = 0

    def ensure(self, end):
        if end > len(self.draws):
            have = len(self.draws)  # always a multiple of 8
            more = max(end - have, have, 64)
            more = -(-more // 8) * 8
            self.draws = np.concatenate([self.draws, _u64_stream([self.key], have, more)[0]])

    def next_u64(self):
        self.ensure(self.pos + 1)
        v = int(self.draws[self.pos])
        self.pos += 1
        return v


# --------------------------------------------------------------------------------------------
# 3. rand_distr 0.5.1 StandardNormal (f64): ZIGNOR ziggurat, 256 layers
# --------------------------------------------------------------------------------------------

def _load_tables():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ziggurat_normal.json")
    with open(path) as f:
        t = json.load(f)
    x = np.array([float.fromhex(h) for h in t["X_hex"]], dtype=np.float64)
    fx = np.array([float.fromhex(h) for h in t["F_hex"]], dtype=np.float64)
    r = float.fromhex(t["R_hex"])
    assert x.shape == fx.shape == (257,) and r == x[1]
    return x, fx, r


ZIG_NORM_X, ZIG_NORM_F, ZIG_NORM_R = _load_tables()
_X = [float(v) for v in ZIG_NORM_X]  # Python floats for the scalar path
_F = [float(v) for v in ZIG_NORM_F]

_TWO_EXP = 0x4000_0000_0000_0000  # biased exponent 1024 (2^1) in place: mantissa | this ∈ [2, 4)
_ONE_EXP = 0x3FF0_0000_0000_0000  # biased exponent 1023 (2^0): ∈ [1, 2)
_OPEN01_OFFSET = 1.0 - 2.0 ** -53  # 1 - f64::EPSILON / 2


def _bits_to_f64(b):
    return np.frombuffer(np.uint64(b).tobytes(), dtype=np.float64)[0].item()


def _fast_path(draws):
    """The one-draw outcome of the ziggurat for each draw taken as a ziggurat draw.

    bits → i = bits & 0xff (layer), u = f64 with mantissa bits >> 12 and exponent 1, i.e. in
    [2, 4), minus 3.0 → u ∈ [-1, 1); x = u * X[i]. Accepted at once iff |x| < X[i+1].
    Returns (x, accepted) arrays of draws' shape.
    """
    i = (draws & np.uint64(0xFF)).astype(np.intp)
    u = ((draws >> np.uint64(12)) | np.uint64(_TWO_EXP)).view(np.float64) - 3.0
    x = u * ZIG_NORM_X[i]
    return x, np.abs(x) < ZIG_NORM_X[i + 1]


def _open01(bits):
    """rand's Open01 for f64: mantissa bits >> 12 with exponent 0 (→ [1, 2)), minus 1 - 2^-53."""
    return _bits_to_f64((bits >> 12) | _ONE_EXP) - _OPEN01_OFFSET


def _standard_uniform(bits):
    """rand's StandardUniform for f64: the top 53 bits times 2^-53, in [0, 1)."""
    return float(bits >> 11) * 2.0 ** -53


def _slow_sample(stream, bits):
    """Finish a sample whose first ziggurat draw `bits` was not accepted at once.

    Exactly rand_distr::utils::ziggurat's loop (scalar IEEE float64 via Python floats; exp and
    log are the C library's, as Rust's f64::exp / f64::ln are on the runtime's native targets).
    """
    while True:
        i = bits & 0xFF
        u = _bits_to_f64((bits >> 12) | _TWO_EXP) - 3.0
        x = u * _X[i]
        if abs(x) < _X[i + 1]:  # only reachable on retries (the first draw failed this)
            return x
        if i == 0:
            # Base layer, beyond R: Marsaglia's tail method with two Open01 draws per try
            # (the loop starts with x = 1, y = 0 so that it runs at least once).
            tx, ty = 1.0, 0.0
            while -2.0 * ty < tx * tx:
                x_ = _open01(stream.next_u64())
                y_ = _open01(stream.next_u64())
                tx = math.log(x_) / ZIG_NORM_R
                ty = math.log(y_)
            return tx - ZIG_NORM_R if u < 0.0 else ZIG_NORM_R - tx
        # Wedge: accept iff F[i+1] + (F[i] - F[i+1]) * U < exp(-x*x/2), U ∈ [0, 1).
        uni = _standard_uniform(stream.next_u64())
        if _F[i + 1] + (_F[i] - _F[i + 1]) * uni < math.exp(-x * x / 2.0):
            return x
        bits = stream.next_u64()  # rejected: start over with a fresh ziggurat draw


# --------------------------------------------------------------------------------------------
# 4. The noise arrays
# --------------------------------------------------------------------------------------------

def _normals(stream, n):
    """n float64 standard normals from `stream` (a fresh _Stream, pos 0)."""
    out = np.empty(n, dtype=np.float64)
    x, ok = _fast_path(stream.draws)
    # Draws not accepted at once, in order: between two of them every draw is one sample.
    stops = np.flatnonzero(~ok)
    k = 0  # samples produced
    while k < n:
        p = stream.pos
        if p >= len(x):  # ran past the precomputed draws: extend and redo the fast path
            stream.ensure(max(p + (n - k) + (n - k) // 16 + 64, 2 * len(x)))
            x, ok = _fast_path(stream.draws)
            stops = np.flatnonzero(~ok)
        # next not-at-once draw at or after p
        j = np.searchsorted(stops, p)
        q = int(stops[j]) if j < len(stops) else len(x)
        take = min(q - p, n - k)
        out[k:k + take] = x[p:p + take]
        k += take
        stream.pos = p + take
        if k < n and q < len(x) and stream.pos == q:
            stream.pos = q + 1
            out[k] = _slow_sample(stream, int(stream.draws[q]))
            k += 1
    return out


def _check_shape(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 0:
        raise ValueError(f"shape must be [C, H, W], got {shape}")
    return shape


def noise_batch(seed, ids, shape):
    """[len(ids), C, H, W] float32: noise(seed, id, shape) stacked, as solver::noise_batch."""
    shape = _check_shape(shape)
    n = shape[0] * shape[1] * shape[2]
    ids = [int(i) for i in ids]
    out = np.empty((len(ids), n), dtype=np.float32)
    if not ids or n == 0:
        return out.reshape((len(ids),) + shape)
    keys = [_key_words(int(seed), i) for i in ids]
    # Enough draws for almost every sample without extension (about 1.2 % of samples take
    # more than one draw); _Stream extends the rare key that needs more.
    n_draws = -(-(n + n // 16 + 64) // 8) * 8
    draws = _u64_stream(keys, 0, n_draws)
    for row, key in enumerate(keys):
        stream = _Stream(key, draws[row])
        # f64 → f32: round to nearest, ties to even (Rust's `as f32`).
        out[row] = _normals(stream, n).astype(np.float32)
    return out.reshape((len(ids),) + shape)


def noise(seed, sample_id, shape):
    """The standard-normal initial noise of sample `sample_id` under `seed`, float32 [C, H, W].

    seed and sample_id are u64 (taken mod 2^64); values fill the array in C (row-major) order.
    """
    return noise_batch(seed, [sample_id], shape)[0]
