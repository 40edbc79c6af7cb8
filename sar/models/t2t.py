"""T2T-ViT-14 (Yuan et al., 2021) with the transformer-based T2T module, and a SAR-ready last block.

Facts from the official code: three soft splits (Unfold 7/4/2, 3/2/1, 3/2/1) with two single-head token
transformers (token dim 64, MLP ratio 1, no qkv bias, scale from their input width, a skip from v), a
linear projection to 384; then 14 ViT blocks (6 heads, MLP ratio 3, no qkv bias, LayerNorm eps 1e-5) on a
frozen 1-D sinusoidal position table. 21.5M parameters and 6.1 GMACs at 224 (the paper's Tab. 2).

Other input sizes (multiples of the soft splits' total stride, 16): the soft splits follow the input, and
the position table, read as the build size's token grid, is resized bicubically to the input's token
grid, as the official code's `resize_pos_embed` does for transfer at other resolutions.
"""

import math
from functools import partial
from typing import Any

import torch
from timm.layers import Mlp, resample_abs_pos_embed
from timm.models import register_model
from timm.models.vision_transformer import Block
from torch import nn

from sar.models.base import ClsHeadModel, TokenModel
from sar.models.layers import (
    ClsAttention,
    Grid,
    LastBlock,
    SARBlock,
    attend,
    drop_path_rates,
    registry_cfgs,
)

LayerNorm = partial(nn.LayerNorm, eps=1e-5)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The 1-D position table of T2T-ViT: sin on even, cos on odd channels, [CLS] at position 0."""
    position = torch.arange(n_position, dtype=torch.float64)[:, None]
    exponent = (2 * (torch.arange(dim) // 2)).double() / dim
    angles = position / torch.pow(10000.0, exponent)[None]
    table = torch.empty(n_position, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float()[None]


class TokenAttention(nn.Module):
    """Single-head attention from `dim` to `in_dim` channels whose skip is v (the input width differs)."""

    def __init__(self, dim: int, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.scale = dim**-0.5
        self.qkv = nn.Linear(dim, 3 * in_dim, bias=False)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 1, self.in_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = attend(q, k, v, self.scale, 0.0).transpose(1, 2).flatten(2)
        return v.squeeze(1) + self.proj(out)


class TokenTransformer(nn.Module):
    def __init__(self, dim: int, in_dim: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        self.attn = TokenAttention(dim, in_dim)
        self.norm2 = LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _unfolded(size: Grid, kernel: int, stride: int, padding: int) -> Grid:
    return tuple((s + 2 * padding - kernel) // stride + 1 for s in size)


class T2TModule(nn.Module):
    """Tokens-to-token: soft split (Unfold), token transformer, re-structurisation, three times."""

    def __init__(
        self,
        img_size: int,
        in_chans: int,
        embed_dim: int,
        token_dim: int,
        kernels: tuple[int, int, int],
        strides: tuple[int, int, int],
        paddings: tuple[int, int, int],
    ) -> None:
        super().__init__()
        self.splits = nn.ModuleList(
            nn.Unfold(k, stride=s, padding=p) for k, s, p in zip(kernels, strides, paddings, strict=True)
        )
        self.attention1 = TokenTransformer(in_chans * kernels[0] ** 2, token_dim)
        self.attention2 = TokenTransformer(token_dim * kernels[1] ** 2, token_dim)
        self.project = nn.Linear(token_dim * kernels[2] ** 2, embed_dim)
        self.stride = math.prod(strides)
        self.grids = self.grids_for((img_size, img_size))

    def grids_for(self, size: Grid) -> list[Grid]:
        """The token grid after each soft split of an input of spatial size `size`."""
        grids = [tuple(size)]
        for split in self.splits:
            grids.append(_unfolded(grids[-1], split.kernel_size, split.stride, split.padding))
        return grids[1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """Tokens `[B, h*w, embed_dim]` and their grid (h, w), which follows the input's size."""
        grid = (x.shape[-2], x.shape[-1])
        for split, attention in zip(self.splits, (self.attention1, self.attention2), strict=False):
            grid = _unfolded(grid, split.kernel_size, split.stride, split.padding)
            x = attention(split(x).transpose(1, 2))
            x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        grid = _unfolded(grid, self.splits[2].kernel_size, self.splits[2].stride, self.splits[2].padding)
        return self.project(self.splits[2](x).transpose(1, 2)), grid


class T2TViT(TokenModel, ClsHeadModel):
    """T2T-ViT: the T2T module, then timm's ViT blocks (the last a `SARBlock`) on one token grid.

    Arguments (defaults: T2T-ViT_t-14): `img_size` (the square build size) and `in_chans` of the images,
    `num_classes` (0: no classifier); `embed_dim`, `depth` (blocks), `num_heads`, `mlp_ratio` (MLP hidden
    width / width) and `qkv_bias` of the ViT blocks; `token_dim` (the token transformers' width) and the
    three soft splits' `t2t_kernels`, `t2t_strides` and `t2t_paddings`; `drop_rate` (dropout after the
    position embedding, the attention projection and in the MLP), `attn_drop_rate` (attention dropout),
    `drop_path_rate` (stochastic depth, linear up to it over the blocks) and `last_block` (Tab. 1b, see
    `SARBlock`).
    """

    first_conv = "tokens_to_token.attention1.attn.qkv"  # no conv: the first projection of the pixels

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = False,
        token_dim: int = 64,
        t2t_kernels: tuple[int, int, int] = (7, 3, 3),
        t2t_strides: tuple[int, int, int] = (4, 2, 2),
        t2t_paddings: tuple[int, int, int] = (2, 1, 1),
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        last_block: LastBlock = "sar",
    ) -> None:
        super().__init__()
        self.last_block = last_block
        self.img_size = img_size
        self.in_chans = in_chans
        self.tokens_to_token = T2TModule(
            img_size, in_chans, embed_dim, token_dim, t2t_kernels, t2t_strides, t2t_paddings
        )
        self.feature_grid = self.similarity_grid = self.tokens_to_token.grids[-1]
        num_patches = math.prod(self.feature_grid)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sinusoid_table(num_patches + 1, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, depth)
        block = partial(
            Block,
            embed_dim,
            num_heads,
            mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            norm_layer=LayerNorm,
        )
        self.blocks = nn.ModuleList([block(drop_path=rate) for rate in dpr[:-1]])
        attn = ClsAttention(
            embed_dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop_rate, proj_drop=drop_rate
        )
        self.blocks.append(
            SARBlock.build(
                embed_dim, attn, mlp_ratio, LayerNorm, drop=drop_rate, drop_path=dpr[-1], mode=last_block
            )
        )
        self.norm = LayerNorm(embed_dim)
        self.feature_info = [
            {"module": f"blocks.{i}", "num_chs": embed_dim, "reduction": self.tokens_to_token.stride}
            for i in range(depth)
        ]
        self._init_head_and_weights(embed_dim, num_classes)

    @property
    def size_multiple(self) -> Grid:
        return (self.tokens_to_token.stride, self.tokens_to_token.stride)

    def _multiple_reason(self) -> str:
        return "the total stride of its soft splits"

    def _grids(self, size):
        grid = self.tokens_to_token.grids_for(size)[-1]
        return grid, grid

    def position_embedding(self, grid: Grid) -> torch.Tensor:
        """The position table `[1, 1 + h*w, C]` for a token grid (h, w): the table itself on the build
        grid, else its patch part resized bicubically (the official `resize_pos_embed`), [CLS] kept."""
        return resample_abs_pos_embed(
            self.pos_embed,
            new_size=grid,
            old_size=self.feature_grid,
            num_prefix_tokens=1,
            interpolation="bicubic",
            antialias=False,
        )

    def _embed(self, x):
        self.check_input(x)
        x, grid = self.tokens_to_token(x)
        return self.pos_drop(self.prepend_cls(x) + self.position_embedding(grid)), grid


CROP_PCT = 0.9
default_cfgs = registry_cfgs(T2TViT.first_conv, "sar_t2t_vit_14", crop_pct=CROP_PCT)


@register_model
def sar_t2t_vit_14(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """T2T-ViT-14 (T2T-ViT_t-14: transformer tokens-to-token) with a SAR-ready last block.

    `pretrained` must be False: no weights are shipped (timm's `create_model` passes it).
    """
    return T2TViT.create("sar_t2t_vit_14", pretrained, kwargs, crop_pct=CROP_PCT)
