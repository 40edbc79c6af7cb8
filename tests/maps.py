"""Boolean maps for labeling tests: random stacks and hand-made hard cases, plus a SciPy reference."""

import numpy as np
import scipy.ndimage as ndi

EIGHT = np.ones((3, 3), dtype=bool)


def scipy_labels(mask: np.ndarray) -> np.ndarray:
    """8-connected labels of one 2-D map by SciPy, the independent reference."""
    return ndi.label(mask, structure=EIGHT)[0]


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True iff two labelings agree on background and group the foreground identically."""
    if not np.array_equal(a == 0, b == 0):
        return False
    fa, fb = a[a != 0].astype(np.int64), b[b != 0].astype(np.int64)
    pairs = np.unique(np.stack([fa, fb]), axis=1).shape[1] if fa.size else 0
    return pairs == np.unique(fa).size == np.unique(fb).size


def min_index_labels(mask: np.ndarray) -> np.ndarray:
    """The documented canonical labels: 1 + the smallest linear index of each component, 0 elsewhere."""
    ref = scipy_labels(mask).ravel()
    out = np.zeros_like(ref)
    for lab in np.unique(ref[ref > 0]):
        where = np.flatnonzero(ref == lab)
        out[where] = where[0] + 1
    return out.reshape(mask.shape)


def random_stacks(rng: np.random.Generator, per_case: int):
    """(name, [N, h, w] bool) stacks over several sizes and densities, some with smooth blobs."""
    sizes = [
        (1, 1),
        (1, 17),
        (17, 1),
        (2, 2),
        (7, 7),
        (14, 14),
        (5, 13),
        (28, 28),
        (3, 64),
        (64, 3),
        (64, 64),
    ]
    for h, w in sizes:
        for density in (0.05, 0.3, 0.5, 0.7, 0.95):
            yield f"{h}x{w}@{density}", rng.random((per_case, h, w)) < density
        noise = ndi.gaussian_filter(rng.standard_normal((per_case, h, w)), sigma=(0, 1.5, 1.5))
        yield f"{h}x{w}@smooth", noise > noise.mean(axis=(1, 2), keepdims=True)


def _spiral(n: int) -> np.ndarray:
    grid = np.zeros((n, n), dtype=bool)
    top, left, bottom, right = 0, 0, n - 1, n - 1
    while top <= bottom and left <= right:
        grid[top, left : right + 1] = True
        grid[top : bottom + 1, right] = True
        if top + 2 <= bottom:
            grid[bottom, left : right + 1] = True
        if left + 2 <= right:
            grid[top + 2 : bottom + 1, left] = True
        if top + 2 <= bottom:
            grid[top + 2, left : right - 1] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    return grid


def hard_cases() -> dict[str, np.ndarray]:
    """Maps that break naive labelers: diagonal-only links, long snakes, many tiny blobs, borders."""
    cases: dict[str, np.ndarray] = {}
    for n in (1, 2, 7, 14, 64):
        yy, xx = np.mgrid[:n, :n]
        cases[f"empty{n}"] = np.zeros((n, n), dtype=bool)
        cases[f"full{n}"] = np.ones((n, n), dtype=bool)
        cases[f"checker{n}"] = (yy + xx) % 2 == 0  # one component through diagonals
        cases[f"diagonal{n}"] = yy == xx
        cases[f"antidiagonal{n}"] = yy + xx == n - 1
        cases[f"border{n}"] = (yy == 0) | (xx == 0) | (yy == n - 1) | (xx == n - 1)
        cases[f"hstripes{n}"] = yy % 2 == 0
        cases[f"vstripes{n}"] = xx % 2 == 0
        cases[f"dots{n}"] = (yy % 2 == 0) & (xx % 2 == 0)  # isolated single pixels
        cases[f"corners{n}"] = ((yy == 0) | (yy == n - 1)) & ((xx == 0) | (xx == n - 1))
        cases[f"spiral{n}"] = _spiral(n)
        cases[f"zigzag{n}"] = (yy % 4 == 1) | ((yy % 4 == 0) & (xx == n - 1)) | ((yy % 4 == 2) & (xx == 0))
        cases[f"diag_staircase{n}"] = (xx - yy) % 3 == 0  # parallel diagonal chains
    cases["single_center"] = np.zeros((14, 14), dtype=bool)
    cases["single_center"][7, 7] = True
    cases["single_last"] = np.zeros((14, 14), dtype=bool)
    cases["single_last"][-1, -1] = True
    # a "U" whose arms meet only at the bottom: the left arm gets a larger provisional label first
    u = np.zeros((9, 9), dtype=bool)
    u[:, 1] = u[:, 7] = u[8, 1:8] = True
    cases["u_shape"] = u
    # a zigzag linked only through diagonal steps, its lowest pixel last in raster order
    w = np.zeros((3, 13), dtype=bool)
    for x in range(13):
        w[abs(x % 4 - 2), x] = True
    cases["w_diagonal"] = w
    return cases
