"""CPU kernels in Numba, parallel over maps: 8-connected labeling and the fused spatial entropy.

Labeling is run-based union-find. Each row (at most 64 pixels) becomes a 64-bit word and its foreground
runs are pulled out with count-trailing-zeros, so there is no branch per pixel (thresholded attention maps
are close to random, and per-pixel branches mispredict). Runs touching runs of the previous row are united,
and each set keeps its first run in raster order as its root: a component's label is `1 + the smallest
linear index` of its pixels, the same labels the GPU kernel produces.

The entropy kernel finds the runs of `S > m`, sums B over each run and each component (segment sums, never
a mask per blob) and returns, per map, the entropy and its gradient dH/dS in closed form (see
`sar.entropy`), accumulating in float64. Working on runs rather than pixels keeps the serial chains short.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

MAX_WIDTH = 64  # a row must fit one uint64
_ALL = np.uint64(2**64 - 1)


@intrinsic
def _cttz(typingctx, bits):
    """Count trailing zeros of a non-zero uint64: one `tzcnt` instruction."""
    if bits != types.uint64:
        return None

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return types.uint64(types.uint64), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _find(parent: np.ndarray, i: int) -> int:
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@numba.njit(cache=True, nogil=True)
def _find_runs(bits: np.ndarray, h: int, runs: np.ndarray, parent: np.ndarray, run_at: np.ndarray) -> int:
    """Union-find over the foreground runs of the rows `bits` ([h] uint64); returns the number of runs.

    Fills `runs[r] = (row, first column, end column)` in raster order and `parent[r]` = the index of r's
    component's first run. `run_at` ([2, 64]) is scratch: the run covering each column of two rows.
    """
    n_runs = 0
    prev_bits = np.uint64(0)
    for y in range(h):
        bits_left = bits[y]
        cur = run_at[y & 1]
        prev = run_at[1 - (y & 1)]
        while bits_left:
            lo = _cttz(bits_left)
            rest = ~(bits_left >> lo)
            hi = lo + _cttz(rest) if rest else np.uint64(64)
            run = (_ALL >> (np.uint64(64) - (hi - lo))) << lo
            bits_left ^= run
            runs[n_runs, 0] = y
            runs[n_runs, 1] = lo
            runs[n_runs, 2] = hi
            for x in range(lo, hi):  # explicit loops: Numba's slices cost more than these short runs
                cur[x] = n_runs
            # previous-row runs touching columns [lo - 1, hi]: one segment of `touch` per run
            touch = prev_bits & (run | (run << np.uint64(1)) | (run >> np.uint64(1)))
            touch &= ~(touch << np.uint64(1))
            root = n_runs
            while touch:
                other = _find(parent, prev[_cttz(touch)])
                if other < root:  # union by smallest root; the new run is still its own root
                    if root != n_runs:
                        parent[root] = other
                    root = other
                elif other > root:
                    parent[other] = root
                touch &= touch - np.uint64(1)
            parent[n_runs] = root
            n_runs += 1
        prev_bits = bits[y]
    for r in range(n_runs):  # parent[r] <= r and every earlier run already points at its root
        parent[r] = parent[parent[r]]
    return n_runs


@numba.njit(cache=True, nogil=True)
def _label_one(fg, out, h, w, bits, runs, parent, run_at) -> None:
    """Label one flattened map `fg` (bool, h*w) into `out` (int32, h*w): 0, or 1 + min linear index."""
    for y in range(h):
        row = np.uint64(0)
        for x in range(w):
            row |= np.uint64(fg[y * w + x]) << np.uint64(x)
        bits[y] = row
    n_runs = _find_runs(bits, h, runs, parent, run_at)
    out[:] = 0
    for r in range(n_runs):
        root = parent[r]
        label = runs[root, 0] * w + runs[root, 1] + 1
        start = runs[r, 0] * w
        for i in range(start + runs[r, 1], start + runs[r, 2]):
            out[i] = label


def _max_runs(h: int, w: int) -> int:
    return h * ((w + 1) // 2)


def _n_chunks(n_maps: int) -> int:
    return max(1, min(n_maps, 4 * numba.get_num_threads()))


@numba.njit(cache=True, nogil=True, inline="always")
def _chunk(c: int, n_chunks: int, n_maps: int) -> tuple[int, int]:
    """Maps [start, stop) of chunk c: scratch is allocated once per chunk, not once per map."""
    return c * n_maps // n_chunks, (c + 1) * n_maps // n_chunks


@numba.njit(cache=True, parallel=True)
def _label_stack(fg: np.ndarray, out: np.ndarray, h: int, w: int, max_runs: int, n_chunks: int) -> None:
    for c in numba.prange(n_chunks):
        bits = np.empty(h, dtype=np.uint64)
        runs = np.empty((max_runs, 3), dtype=np.int32)
        parent = np.empty(max_runs, dtype=np.int32)
        run_at = np.empty((2, MAX_WIDTH), dtype=np.int32)
        start, stop = _chunk(c, n_chunks, fg.shape[0])
        for n in range(start, stop):
            _label_one(fg[n], out[n], h, w, bits, runs, parent, run_at)


def _check_width(h: int, w: int) -> None:
    if w > MAX_WIDTH:
        raise ValueError(f"the CPU kernels take maps at most {MAX_WIDTH} wide, got {h}x{w}")


def label_numba(mask: np.ndarray) -> np.ndarray:
    """Labels of a bool stack `[N, h, w]`: int32, 0 on background, `1 + min linear index` per component."""
    n, h, w = mask.shape
    _check_width(h, w)
    out = np.empty((n, h * w), dtype=np.int32)
    if out.size:
        _label_stack(np.ascontiguousarray(mask).reshape(n, h * w), out, h, w, _max_runs(h, w), _n_chunks(n))
    return out.reshape(n, h, w)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "nsz"})
def _sum(x: np.ndarray) -> float:
    """Sum in float64, reassociated so that it vectorises (NaN and inf still propagate)."""
    total = 0.0
    for v in x:
        total += v
    return total


@numba.njit(cache=True, nogil=True)
def _entropy_one(s, h, w, eps, need_grad, grad, bits, runs, parent, run_at, mass) -> float:
    """Entropy of one flattened map `s`; writes dH/ds into `grad` when `need_grad`. The rest is scratch
    (`mass` is per run: a component's mass, then its log-probability, then its coefficient dH/dB)."""
    n = h * w
    total = _sum(s)
    if not math.isfinite(total):  # NaN or inf anywhere: no value, no gradient
        grad[:] = 0.0
        return math.nan
    m = total / n
    for y in range(h):
        row = np.uint64(0)
        for x in range(w):
            row |= np.uint64(s[y * w + x] > m) << np.uint64(x)
        bits[y] = row
    n_runs = _find_runs(bits, h, runs, parent, run_at)

    total = n * eps  # T = sum of B = n * eps + sum over the blobs of (S - m)
    for r in range(n_runs):
        mass[r] = 0.0
    for r in range(n_runs):
        start = runs[r, 0] * w
        seg = 0.0
        for i in range(start + runs[r, 1], start + runs[r, 2]):
            seg += s[i] - m
        total += seg
        mass[parent[r]] += seg + (runs[r, 2] - runs[r, 1]) * eps
    entropy = 0.0
    p_sum = 0.0
    for r in range(n_runs):
        if parent[r] == r:  # a component's first run holds its mass
            p = mass[r] / total
            mass[r] = math.log(p)
            entropy -= p * mass[r]
            p_sum += p
    if need_grad:
        # dH/dB_i = (-(log P_j + 1) - H + sum_j P_j) / T for i in C_j; relu passes none off the blobs
        g_sum = 0.0
        for r in range(n_runs):
            if parent[r] == r:
                mass[r] = (-(mass[r] + 1.0) - entropy + p_sum) / total
            g_sum += mass[parent[r]] * (runs[r, 2] - runs[r, 1])
        g_mean = g_sum / n  # then through B = relu(S - m) + eps, where m is the mean of S
        grad[:] = -g_mean
        for r in range(n_runs):
            g = mass[parent[r]] - g_mean
            start = runs[r, 0] * w
            for i in range(start + runs[r, 1], start + runs[r, 2]):
                grad[i] = g
    return entropy


@numba.njit(cache=True, parallel=True)
def _entropy_stack(s, h, w, eps, need_grad, out, grad, max_runs, n_chunks):
    for c in numba.prange(n_chunks):
        bits = np.empty(h, dtype=np.uint64)
        runs = np.empty((max_runs, 3), dtype=np.int32)
        parent = np.empty(max_runs, dtype=np.int32)
        run_at = np.empty((2, MAX_WIDTH), dtype=np.int32)
        mass = np.empty(max_runs, dtype=np.float64)
        start, stop = _chunk(c, n_chunks, s.shape[0])
        for k in range(start, stop):
            out[k] = _entropy_one(s[k], h, w, eps, need_grad, grad[k], bits, runs, parent, run_at, mass)


def entropy_numba(
    s: np.ndarray, h: int, w: int, eps: float, need_grad: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-map spatial entropy of `s` `[N, h*w]` and dH/ds (`[N, 0]` unless `need_grad`), in `s`'s dtype."""
    _check_width(h, w)
    n_maps = s.shape[0]
    out = np.empty(n_maps, dtype=s.dtype)
    grad = np.empty_like(s) if need_grad else np.empty((n_maps, 0), dtype=s.dtype)
    if s.size:
        _entropy_stack(
            np.ascontiguousarray(s),
            h,
            w,
            float(eps),
            need_grad,
            out,
            grad,
            _max_runs(h, w),
            _n_chunks(n_maps),
        )
    return out, grad
