"""Pieces shared by the SAR-ready models: the configurable block, a [CLS] attention that can also return
the similarity maps S of Eq. 4, init and the timm registry glue."""

import contextlib
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import generate_default_cfgs
from torch import nn

from sar.entropy import cls_similarity

LastBlock = Literal["standard", "no_msa_skip", "sar", "no_skips"]
LAST_BLOCKS: tuple[str, ...] = get_args(LastBlock)
"""The `last_block` variants of Tab. 1b, in its row order (A-D): the values `mode` and `last_block` take."""
Grid = tuple[int, int]


def check_last_block(last_block: str) -> str:
    if last_block not in LAST_BLOCKS:
        raise ValueError(f"last_block must be one of {', '.join(LAST_BLOCKS)}; got {last_block!r}")
    return last_block


class SARBlock(nn.Module):
    """A pre-norm transformer block whose skips follow Tab. 1b of the paper.

    - `"standard"` (Eq. 1-2, row A): z' = MSA(LN(z)) + z;  z = MLP(LN(z')) + z'
    - `"no_msa_skip"` (row B):       z' = MSA(LN(z));      z = MLP(LN(z')) + z'
    - `"sar"` (Eq. 10-11, row C):    z' = MSA(LN(z));      z = MLP(z') + z'
    - `"no_skips"` (row D):          z' = MSA(LN(z));      z = MLP(z')

    The attention module takes `(x, grid)` (grid: the patch-token grid of x) and has
    `forward_with_similarity(x, grid) -> (out, S)`. Drop path only ever drops a branch that has a skip.
    Parameter names match timm's `Block` (norm1, attn, norm2, mlp), so standard checkpoints load.

    `norm1`, `attn`, `norm2`, `mlp`: the block's modules (`norm2` is replaced by an identity in `"sar"`
    and `"no_skips"`); `drop_path`: the stochastic-depth rate of the skipped branches; `mode`: the row of
    Tab. 1b, one of `LAST_BLOCKS`.
    """

    def __init__(
        self,
        norm1: nn.Module,
        attn: nn.Module,
        norm2: nn.Module,
        mlp: nn.Module,
        drop_path: float = 0.0,
        mode: LastBlock = "standard",
    ) -> None:
        super().__init__()
        self.mode = check_last_block(mode)
        self.norm1 = norm1
        self.attn = attn
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 and mode == "standard" else nn.Identity()
        self.norm2 = nn.Identity() if mode in ("sar", "no_skips") else norm2
        self.mlp = mlp
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 and mode != "no_skips" else nn.Identity()

    @classmethod
    def build(
        cls,
        dim: int,
        attn: nn.Module,
        mlp_ratio: float,
        norm_layer: Callable[[int], nn.Module],
        act_layer: type[nn.Module] = nn.GELU,
        drop: float = 0.0,
        drop_path: float = 0.0,
        mode: LastBlock = "standard",
    ) -> "SARBlock":
        """A block of width `dim` around the attention module `attn`, with timm's `Mlp` and norms.

        The MLP's hidden width is `dim * mlp_ratio`, with activation `act_layer` and dropout `drop`;
        `norm_layer(dim)` makes the two norms; `drop_path` and `mode` are the constructor's.
        """
        mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        return cls(norm_layer(dim), attn, norm_layer(dim), mlp, drop_path=drop_path, mode=mode)

    def _finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        z = x + self.drop_path1(attn_out) if self.mode == "standard" else attn_out
        mlp_out = self.mlp(self.norm2(z))
        return mlp_out if self.mode == "no_skips" else z + self.drop_path2(mlp_out)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        """The block's output `[B, N, C]` for tokens `x` `[B, N, C]` whose patches lie on `grid` (h, w)."""
        return self._finish(x, self.attn(self.norm1(x), grid))

    def forward_with_similarity(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward(x, grid)` and the attention's similarity maps S `[B, H, h, w]` of the same pass."""
        out, S = self.attn.forward_with_similarity(self.norm1(x), grid)
        return self._finish(x, out), S


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, dropout: float) -> torch.Tensor:
    """Fused attention (scaled_dot_product_attention): the full attention matrix is never materialised."""
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scale)


class FusedAttentionOutput(nn.Module):
    """The output side shared by the attention modules here: fused attention over per-head q, k, v, then
    the heads concatenated and projected. Subclasses set scale, attn_drop (a rate), proj and proj_drop."""

    scale: float
    attn_drop: float

    similarity = "dot"  # what S is: "dot" (Eq. 4, the attention's own logits) or "cosine" (Eq. 15)

    def _out(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = attend(q, k, v, self.scale, self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).flatten(2)))


def cls_row_similarity(
    q: torch.Tensor, k: torch.Tensor, scale: float, grid: Grid, kind: str = "dot"
) -> torch.Tensor:
    """S of Eq. 4 (`kind="dot"`) or Eq. 15 (`"cosine"`) from per-head q, k `[B, H, N, d]` with the [CLS]
    token first and the grid's patch keys last: one extra `[B, H, 1, n]` product, in float32."""
    n = grid[0] * grid[1]
    return cls_similarity(
        q[:, :, 0], k[:, :, -n:], grid=grid, kind=kind, scale=scale if kind == "dot" else None
    )


class ClsAttention(FusedAttentionOutput):
    """Multi-head self-attention with timm's parameter names (qkv, proj) that can also return S."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        return self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)  # unpacked here, not with *: FX cannot star-unpack a traced value
        return self._out(q, k, v)

    def forward_with_similarity(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, v = self.qkv_heads(x)
        return self._out(q, k, v), cls_row_similarity(q, k, self.scale, grid, self.similarity)


def init_weights(module: nn.Module) -> None:
    """The official codes' init: truncated normal (std .02) for linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def check_stages(**per_stage: tuple) -> None:
    """Per-stage settings must all have one entry per stage."""
    lengths = {name: len(values) for name, values in per_stage.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per-stage settings differ in length: {lengths}")


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth growing linearly from 0 to `rate` over `depth` blocks."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def model_kwargs(name: str, pretrained: bool, kwargs: dict) -> dict:
    """The architecture arguments of a timm entry point, without timm's weight-loading ones.

    No weights are shipped or downloaded: every model is trained from scratch by the harness.
    """
    if pretrained:
        raise ValueError(f"{name}: no pretrained weights are available; create it with pretrained=False")
    timm_only = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
    return {key: value for key, value in kwargs.items() if key not in timm_only}


def build(factory: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    """`factory(**kwargs)` with timm's factory arguments `device` and `dtype` (timm's `create_model` passes
    them to every entry point): the model built on that device, its floating-point tensors in that dtype."""
    kwargs = dict(kwargs)
    device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = factory(**kwargs)
    return model if dtype is None else model.to(dtype=dtype)


def registry_cfgs(first_conv: str, *names: str, **extra: Any) -> dict:
    """timm's `default_cfgs` for a module's entry points `names`: each model's config at its defaults
    (224 px, 1000 classes), without weights. timm then knows the models as its own: `timm.get_pretrained_cfg`
    answers for them and `list_models(name_matches_cfg=True)` lists them."""
    return generate_default_cfgs({name: pretrained_cfg((3, 224, 224), first_conv, **extra) for name in names})


def pretrained_cfg(
    input_size: tuple[int, int, int], first_conv: str, num_classes: int = 1000, **extra
) -> dict:
    """timm-style config of a model, so timm's data helpers (resolve_data_config) work with it;
    `first_conv`: the module that takes the image's channels (what timm adapts for another `in_chans`)."""
    return {
        "url": "",
        "num_classes": num_classes,
        "input_size": input_size,
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": first_conv,
        "classifier": "head",
        **extra,
    }
