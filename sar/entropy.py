"""The spatial-entropy loss (Eq. 4-9), its total-variation alternative (Eq. 14) and the similarity maps.

For one map S with n cells: m = mean(S); the components C_j are the 8-connected regions of S > m;
B = relu(S - m) + eps; T = sum B; P_j = sum_{C_j} B / T; H = -sum_j P_j log P_j.

The labels are piecewise constant in S, so, as with the masks of Appendix A, the gradient flows through B
only. It has a closed form, which the fused kernels return with H in one pass over each map:
    dH/dB_i = (-(log P_j + 1) - H + sum_j P_j) / T   for i in C_j (and (-H + sum_j P_j) / T off the blobs),
    dH/dS_k = [S_k > m] dH/dB_k - (1/n) sum_i [S_i > m] dH/dB_i.
Per-component sums are segment sums over the labels, never one dense mask per blob.
"""

from typing import Literal

import torch
import torch.nn.functional as F

from sar.kernels.numba_cpu import entropy_numba

Reduction = Literal["mean", "none"]


@torch.library.custom_op("sar::spatial_entropy_maps", mutates_args=(), device_types="cpu")
def _entropy_maps(
    s: torch.Tensor, h: int, w: int, eps: float, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map entropies of `s` `[N, h*w]` and their gradients dH/ds (`[N, 0]` unless `need_grad`)."""
    value, grad = entropy_numba(s.numpy(), h, w, eps, need_grad)
    return torch.from_numpy(value), torch.from_numpy(grad)


@_entropy_maps.register_kernel("cuda")
def _entropy_maps_cuda(s: torch.Tensor, h: int, w: int, eps: float, need_grad: bool):
    from sar.kernels.triton_gpu import entropy_triton  # triton is needed only where there is a GPU

    return entropy_triton(s, h, w, eps, need_grad)


@_entropy_maps.register_fake
def _entropy_maps_fake(s: torch.Tensor, h: int, w: int, eps: float, need_grad: bool):
    return s.new_empty(s.shape[0]), s.new_empty((s.shape[0], s.shape[1] if need_grad else 0))


class _SpatialEntropy(torch.autograd.Function):
    """The kernels return dH/dS with H, so backward is one product (cheaper than a custom op's autograd)."""

    @staticmethod
    def forward(ctx, s: torch.Tensor, h: int, w: int, eps: float) -> torch.Tensor:
        value, grad = _entropy_maps(s, h, w, eps, ctx.needs_input_grad[0])
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_value: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad_value.unsqueeze(-1) * grad, None, None, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for half-precision inputs (autocast), the input's own dtype when it is wider."""
    return torch.promote_types(x.dtype, torch.float32)


def _check_maps(name: str, S: torch.Tensor, reduction: str) -> None:
    if not isinstance(S, torch.Tensor):
        raise TypeError(f"{name} expects S as a torch.Tensor, got {type(S).__name__}")
    if S.dim() != 4:
        raise ValueError(f"{name} expects S of shape [B, H, k, k], got {tuple(S.shape)}")
    if not S.is_floating_point():
        raise TypeError(f"{name} expects a floating-point S, got dtype {S.dtype}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"{name}: reduction must be 'mean' or 'none', got {reduction!r}")


def _reduce(per_map: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    return per_map.mean() if reduction == "mean" else per_map


def spatial_entropy(S: torch.Tensor, eps: float = 1e-9, reduction: Reduction = "mean") -> torch.Tensor:
    """Spatial entropy of the similarity maps `S` `[B, H, k, k]` (Eq. 7-9).

    `eps` (>= 0) is added to each above-mean cell's mass B, so that no blob has zero mass (log 0).
    `reduction="none"` gives the `[B, H]` per-map entropies, `"mean"` their mean (L_se of Eq. 9, averaged
    over the batch). Computed in float32 (or wider) even under autocast. A map with no component (a flat
    map) contributes 0 with a zero gradient; a map holding NaN or inf gives NaN (and a zero gradient).
    """
    _check_maps("spatial_entropy", S, reduction)
    if not (isinstance(eps, float | int) and eps >= 0):
        raise ValueError(f"spatial_entropy: eps must be a number >= 0, got {eps!r}")
    b, heads, kh, kw = S.shape
    flat = S.to(_compute_dtype(S)).reshape(b * heads, kh * kw)  # explicit dtype: autocast has no say
    value = _SpatialEntropy.apply(flat, kh, kw, float(eps))
    return _reduce(value.reshape(b, heads), reduction)


def tv_loss(S: torch.Tensor, reduction: Reduction = "mean") -> torch.Tensor:
    """Total-variation loss of Eq. 14 (Appendix B) of the similarity maps `S` `[B, H, k, k]`.

    Per map, the sum of absolute differences between horizontally and vertically adjacent cells;
    `reduction="none"` gives these `[B, H]` per-map values, `"mean"` their mean over heads and batch.
    """
    _check_maps("tv_loss", S, reduction)
    x = S.to(_compute_dtype(S))  # differences, abs and sums are not autocast ops: they stay in this dtype
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(-2, -1))
    vertical = (x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(-2, -1))
    return _reduce(horizontal + vertical, reduction)


def cls_similarity(
    q_cls: torch.Tensor,
    k_patches: torch.Tensor,
    grid: tuple[int, int] | None = None,
    kind: Literal["dot", "cosine"] = "dot",
    scale: float | None = None,
) -> torch.Tensor:
    """Similarity maps S between the [CLS] query and the patch keys, per head.

    `q_cls` `[B, H, d]`, `k_patches` `[B, H, n, d]` (the n = kh*kw patch tokens, [CLS] excluded) ->
    `[B, H, kh, kw]`. `kind="dot"` is Eq. 4, <q, k> * scale: the pre-softmax attention logits, with the
    attention's own scale (default 1 / sqrt(d), d the head dimension; CvT scales by its full width).
    `kind="cosine"` is Eq. 15 (no scale). `grid` defaults to a square grid. Float32 (or wider).
    """
    if q_cls.dim() != 3 or k_patches.dim() != 4 or q_cls.shape[:2] != k_patches.shape[:2]:
        raise ValueError(
            "cls_similarity expects q_cls [B, H, d] and k_patches [B, H, n, d], "
            f"got {tuple(q_cls.shape)} and {tuple(k_patches.shape)}"
        )
    n, d = k_patches.shape[-2:]
    if q_cls.shape[-1] != d:
        raise ValueError(f"cls_similarity: head dimensions differ: {q_cls.shape[-1]} vs {d}")
    if grid is None:
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(f"cls_similarity: {n} patch keys do not form a square grid; pass grid=(kh, kw)")
        grid = (side, side)
    if grid[0] * grid[1] != n:
        raise ValueError(f"cls_similarity: grid {tuple(grid)} does not hold {n} patch keys")
    if kind not in ("dot", "cosine"):
        raise ValueError(f"cls_similarity: kind must be 'dot' or 'cosine', got {kind!r}")
    with torch.autocast(device_type=q_cls.device.type, enabled=False):
        dtype = _compute_dtype(q_cls)
        q, k = q_cls.to(dtype), k_patches.to(dtype)
        if kind == "cosine":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        s = torch.einsum("bhd,bhnd->bhn", q, k)
        if kind == "dot":
            s = s * (d**-0.5 if scale is None else scale)
    return s.reshape(*s.shape[:2], *grid)
