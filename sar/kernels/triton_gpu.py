"""GPU kernels in Triton, one program per map: 8-connected labeling and the fused spatial entropy.

A program keeps its map and the foreground masks of the four forward neighbours (E, S, SE, SW) in
registers and uses a global int32 buffer as a union-find forest (`parent[i] <= i`, always inside i's
component). It alternates *hook* (for every foreground edge whose trees differ, `atomic_min` the larger
representative towards the smaller) and *compress* (pointer jumping to a fixed point) until no edge joins
two trees. Then every component is one flat tree rooted at its smallest linear index, exactly the labels
of the Numba kernels. The loop runs inside the kernel: one launch, no host synchronisation.

With `TRITON_INTERPRET=1` the kernels run on CPU tensors, which is how CI checks them.
"""

import torch
import triton
import triton.language as tl

MAX_PIXELS = 4096  # 64 x 64: a map must fit one program's registers


@triton.jit
def _hook(base, offs, step, ok):
    """Join the trees of i and i + step wherever `ok`; returns how many such edges still differed."""
    pi = tl.load(base + offs, mask=ok, other=0, volatile=True)
    pj = tl.load(base + offs + step, mask=ok, other=0, volatile=True)
    differ = ok & (pi != pj)
    tl.atomic_min(base + tl.maximum(pi, pj), tl.minimum(pi, pj), mask=differ)
    return tl.sum(differ.to(tl.int32), axis=0)


@triton.jit
def _compress(base, offs, fg):
    """Pointer jumping until every foreground pixel points at its tree's root."""
    moved = tl.sum(fg.to(tl.int32), axis=0)
    while moved > 0:
        p = tl.load(base + offs, mask=fg, other=0, volatile=True)
        pp = tl.load(base + p, mask=fg, other=0, volatile=True)
        tl.store(base + offs, pp, mask=fg)
        moved = tl.sum((fg & (pp != p)).to(tl.int32), axis=0)
        tl.debug_barrier()


@triton.jit
def _label(base, offs, fg, ok_e, ok_s, ok_se, ok_sw, W):
    """Leave in `base[i]` the smallest linear index of i's component, for every foreground i."""
    tl.store(base + offs, offs, mask=fg)
    tl.debug_barrier()
    differ = tl.sum(fg.to(tl.int32), axis=0)
    while differ > 0:
        differ = _hook(base, offs, 1, ok_e)
        differ += _hook(base, offs, W, ok_s)
        differ += _hook(base, offs, W + 1, ok_se)
        differ += _hook(base, offs, W - 1, ok_sw)
        tl.debug_barrier()
        _compress(base, offs, fg)


@triton.jit
def _grid(offs, H, W):
    """Which forward neighbours (E, S, SE, SW) of each pixel lie inside the map."""
    y = offs // W
    x = offs - y * W
    inside = offs < H * W
    has_e = inside & (x + 1 < W)
    has_s = inside & (y + 1 < H)
    return inside, has_e, has_s, has_s & (x + 1 < W), has_s & (x > 0)


@triton.jit
def _label_kernel(mask_ptr, out_ptr, H, W, BLOCK: tl.constexpr):
    n = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    inside, has_e, has_s, has_se, has_sw = _grid(offs, H, W)
    src = mask_ptr + n * H * W
    base = out_ptr + n * H * W
    fg = inside & (tl.load(src + offs, mask=inside, other=0) != 0)
    ok_e = fg & has_e & (tl.load(src + offs + 1, mask=fg & has_e, other=0) != 0)
    ok_s = fg & has_s & (tl.load(src + offs + W, mask=fg & has_s, other=0) != 0)
    ok_se = fg & has_se & (tl.load(src + offs + W + 1, mask=fg & has_se, other=0) != 0)
    ok_sw = fg & has_sw & (tl.load(src + offs + W - 1, mask=fg & has_sw, other=0) != 0)
    _label(base, offs, fg, ok_e, ok_s, ok_se, ok_sw, W)
    root = tl.load(base + offs, mask=fg, other=-1, volatile=True)
    tl.debug_barrier()
    tl.store(base + offs, root + 1, mask=inside)


@triton.jit
def _entropy_kernel(
    s_ptr, h_ptr, grad_ptr, root_ptr, mass_ptr, H, W, eps, NEED_GRAD: tl.constexpr, BLOCK: tl.constexpr
):
    n = tl.program_id(0).to(tl.int64)
    hw = H * W
    offs = tl.arange(0, BLOCK)
    inside, has_e, has_s, has_se, has_sw = _grid(offs, H, W)
    src = s_ptr + n * hw
    s = tl.load(src + offs, mask=inside, other=0.0)
    total_s = tl.sum(s, axis=0)
    finite = total_s - total_s == 0  # false iff a NaN or an inf is in the map
    m = total_s / hw
    fg = inside & (s > m)
    ok_e = fg & has_e & (tl.load(src + offs + 1, mask=fg & has_e, other=0.0) > m)
    ok_s = fg & has_s & (tl.load(src + offs + W, mask=fg & has_s, other=0.0) > m)
    ok_se = fg & has_se & (tl.load(src + offs + W + 1, mask=fg & has_se, other=0.0) > m)
    ok_sw = fg & has_sw & (tl.load(src + offs + W - 1, mask=fg & has_sw, other=0.0) > m)
    roots = root_ptr + n * hw
    _label(roots, offs, fg, ok_e, ok_s, ok_se, ok_sw, W)
    root = tl.load(roots + offs, mask=fg, other=0, volatile=True)

    b = tl.where(fg, s - m, 0.0) + eps
    total = tl.sum(tl.where(inside, b, 0.0), axis=0)
    masses = mass_ptr + n * hw
    tl.store(masses + offs, tl.zeros_like(b), mask=inside)
    tl.debug_barrier()
    tl.atomic_add(masses + root, b, mask=fg)
    tl.debug_barrier()
    p = tl.load(masses + root, mask=fg, other=1.0, volatile=True) / total
    log_p = tl.log(p)
    is_root = fg & (root == offs)
    entropy = 0.0 - tl.sum(tl.where(is_root, p * log_p, 0.0), axis=0)
    p_sum = tl.sum(tl.where(is_root, p, 0.0), axis=0)
    tl.store(h_ptr + n, tl.where(finite, entropy, float("nan")))
    if NEED_GRAD:
        # dH/dB_i = (-(log P_j + 1) - H + sum_j P_j) / T for i in C_j, then through B = relu(S - m) + eps
        g = tl.where(fg, (-(log_p + 1.0) - entropy + p_sum) / total, 0.0)
        g = g - tl.sum(g, axis=0) / hw
        tl.store(grad_ptr + n * hw + offs, tl.where(finite, g, 0.0), mask=inside)


def _launch_shape(h: int, w: int) -> tuple[int, int]:
    if h * w > MAX_PIXELS:
        raise ValueError(f"the GPU kernels take maps of at most {MAX_PIXELS} pixels, got {h}x{w}")
    block = triton.next_power_of_2(h * w)
    return block, 8 if block >= 2048 else 4


def label_triton(mask: torch.Tensor) -> torch.Tensor:
    """Labels of a bool stack `[N, h, w]` (CUDA, or CPU under TRITON_INTERPRET=1), int32, same device."""
    n, h, w = mask.shape
    block, warps = _launch_shape(h, w)
    out = torch.empty((n, h, w), dtype=torch.int32, device=mask.device)
    if out.numel():
        _label_kernel[(n,)](mask.contiguous().view(torch.uint8), out, h, w, BLOCK=block, num_warps=warps)
    return out


def entropy_triton(
    s: torch.Tensor, h: int, w: int, eps: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map spatial entropy of `s` `[N, h*w]` and dH/ds (`[N, 0]` unless `need_grad`), in `s`'s dtype."""
    n = s.shape[0]
    block, warps = _launch_shape(h, w)
    s = s.contiguous()
    out = torch.empty(n, dtype=s.dtype, device=s.device)
    grad = torch.empty_like(s) if need_grad else s.new_empty((n, 0))
    if s.numel():
        roots = torch.empty(s.shape, dtype=torch.int32, device=s.device)
        masses = torch.empty_like(s)
        _entropy_kernel[(n,)](
            s, out, grad, roots, masses, h, w, float(eps), NEED_GRAD=need_grad, BLOCK=block, num_warps=warps
        )
    return out, grad
