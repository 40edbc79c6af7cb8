"""PVT-Small (PVT v1, Wang et al., 2021) with a SAR-ready last block.

Facts from the official code: four stages of patch embedding (conv with kernel = stride = 4, 2, 2, 2, then
LayerNorm eps 1e-5), widths 64/128/320/512, heads 1/2/5/8, MLP ratios 8/8/4/4, depths 3/4/6/3 and
spatial-reduction attention (keys and values from a conv with kernel = stride = 8/4/2/1, then LayerNorm eps
1e-5); a learned position embedding per stage; the [CLS] token joins in the last stage only, whose grid is
7x7 at 224, so S is 7x7 (PVT's segmentation backbone leaves [CLS] out: `dense_cls`). Blocks and the final
norm use LayerNorm eps 1e-6. 24.5M parameters, 3.8 GMACs.

Other input sizes (multiples of 32 for PVT-Small, where every stage's patch grid and spatial reduction
divide exactly): each stage's position embedding is resized bilinearly to that stage's grid, as the
official code does for detection and segmentation inputs ([CLS]'s own entry kept); S is on the last
stage's grid (input / 32).
"""

import math
from functools import partial
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import register_model, register_notrace_function
from torch import nn

from sar.models.base import PyramidModel
from sar.models.layers import (
    FusedAttentionOutput,
    Grid,
    LastBlock,
    SARBlock,
    check_stages,
    cls_row_similarity,
    drop_path_rates,
    registry_cfgs,
)

BlockNorm = partial(nn.LayerNorm, eps=1e-6)


class PatchEmbed(nn.Module):
    """Non-overlapping patches (conv with kernel = stride) and a LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


@register_notrace_function  # FX: a graph leaf, run on the real sizes (it branches on them)
def check_grid_tokens(n: int, grid: Grid) -> None:
    if n != math.prod(grid):
        raise ValueError("spatial reduction needs a token grid without extra tokens")


class SRAttention(FusedAttentionOutput):
    """Spatial-reduction attention: keys and values from a strided conv of the token grid (when sr > 1)."""

    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], -1, self.head_dim).transpose(1, 2)

    def _qkv(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, c = x.shape
        q = self._heads(self.q(x))
        if self.sr_ratio > 1:
            check_grid_tokens(n, grid)
            x = self.sr(x.transpose(1, 2).reshape(b, c, *grid)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, c).permute(2, 0, 1, 3).unbind(0)
        return q, self._heads(k), self._heads(v)

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self._out(*self._qkv(x, grid))

    def forward_with_similarity(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sr_ratio > 1:
            raise ValueError(
                "S needs the [CLS] token and full-resolution keys: use it on a stage with sr_ratio 1"
            )
        q, k, v = self._qkv(x, grid)
        return self._out(q, k, v), cls_row_similarity(q, k, self.scale, grid, self.similarity)


class PyramidVisionTransformer(PyramidModel):
    """PVT v1: four stages of patch embedding, position embedding and spatial-reduction blocks; [CLS]
    joins the last. Its feature maps (`forward_intermediates`, `features_only`) are those of the official
    segmentation backbone (whai362/PVT, `segmentation/pvt.py`): strides 4/8/16/32, stage 4 run on its
    patch tokens alone with its position embedding's [CLS] entry left out (`pos_embed4[:, 1:]`), the
    classifier's `cls_token` unused. `dense_cls=True` runs stage 4 with [CLS] for the maps instead, as the
    classifier does (the SAR last block sees the same token set as in pre-training).

    Arguments (defaults: PVT-Small): `img_size` (the square build size) and `in_chans` of the images,
    `num_classes` (0: no classifier); per stage, `patch_sizes` (kernel = stride of the patch embedding),
    `embed_dims` (widths), `num_heads`, `mlp_ratios` (MLP hidden width / width), `depths` (blocks) and
    `sr_ratios` (the spatial reduction of keys and values; 1 in the last stage, where S needs every
    key); `qkv_bias` (biases of the q, k, v layers), `drop_rate` (dropout after the position embedding,
    the attention projection and in the MLP), `attn_drop_rate` (attention dropout), `drop_path_rate`
    (stochastic depth, linear up to it over all blocks) and `last_block` (Tab. 1b, see `SARBlock`).
    """

    first_conv = "patch_embeds.0.proj"

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        patch_sizes: tuple[int, ...] = (4, 2, 2, 2),
        embed_dims: tuple[int, ...] = (64, 128, 320, 512),
        num_heads: tuple[int, ...] = (1, 2, 5, 8),
        mlp_ratios: tuple[float, ...] = (8, 8, 4, 4),
        depths: tuple[int, ...] = (3, 4, 6, 3),
        sr_ratios: tuple[int, ...] = (8, 4, 2, 1),
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        last_block: LastBlock = "sar",
        dense_cls: bool = False,
    ) -> None:
        super().__init__()
        check_stages(
            patch_sizes=patch_sizes,
            embed_dims=embed_dims,
            num_heads=num_heads,
            mlp_ratios=mlp_ratios,
            depths=depths,
            sr_ratios=sr_ratios,
        )
        if sr_ratios[-1] != 1:
            raise ValueError("the last stage holds the [CLS] token and must have sr_ratio 1")
        self.img_size = img_size
        self.in_chans = in_chans
        self.last_block = last_block
        self.dense_cls = dense_cls
        dpr = iter(drop_path_rates(drop_path_rate, sum(depths)))
        self.patch_embeds = nn.ModuleList()
        self.pos_embeds = nn.ParameterList()
        self.stages = nn.ModuleList()
        size, chans = img_size, in_chans
        self.stage_grids: list[Grid] = []
        for i, (patch, dim, depth) in enumerate(zip(patch_sizes, embed_dims, depths, strict=True)):
            size //= patch
            self.stage_grids.append((size, size))
            last_stage = i == len(depths) - 1
            self.patch_embeds.append(PatchEmbed(chans, dim, patch))
            self.pos_embeds.append(nn.Parameter(torch.zeros(1, size * size + int(last_stage), dim)))
            blocks = nn.ModuleList()
            for j in range(depth):
                attn = SRAttention(dim, num_heads[i], sr_ratios[i], qkv_bias, attn_drop_rate, drop_rate)
                mode = last_block if last_stage and j == depth - 1 else "standard"
                blocks.append(
                    SARBlock.build(
                        dim, attn, mlp_ratios[i], BlockNorm, drop=drop_rate, drop_path=next(dpr), mode=mode
                    )
                )
            self.stages.append(blocks)
            chans = dim
        self.feature_grid = self.similarity_grid = (size, size)
        self.cls_stage = len(depths) - 1
        strides = [math.prod(patch_sizes[: i + 1]) for i in range(len(patch_sizes))]
        self.feature_info = [
            {"module": f"stages.{i}", "num_chs": dim, "reduction": stride}
            for i, (dim, stride) in enumerate(zip(embed_dims, strides, strict=True))
        ]
        self.stride = math.lcm(*(stride * sr for stride, sr in zip(strides, sr_ratios, strict=True)))
        self.patch_sizes = tuple(patch_sizes)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, chans))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm = BlockNorm(chans)
        self._init_head_and_weights(chans, num_classes)
        for pos in self.pos_embeds:
            trunc_normal_(pos, std=0.02)

    @property
    def size_multiple(self) -> Grid:
        return (self.stride, self.stride)

    def _multiple_reason(self) -> str:
        return "so that every stage's patch grid and spatial reduction divide exactly"

    def _grids(self, size):
        h, w = size
        for patch in self.patch_sizes:
            h, w = h // patch, w // patch
        return (h, w), (h, w)

    def stage_position(self, stage, grid) -> torch.Tensor:
        """Stage `stage`'s position embedding on the token grid `grid`: the parameter itself on the build
        grid, else resized bilinearly (the official `_get_pos_embed`); the last stage's [CLS] entry kept."""
        return resample_abs_pos_embed(
            self.pos_embeds[stage],
            new_size=grid,
            old_size=self.stage_grids[stage],
            num_prefix_tokens=int(stage == self.cls_stage),
            interpolation="bilinear",
            antialias=False,
        )

    def stage_embeds(self) -> nn.ModuleList:
        """The per-stage `PatchEmbed`s, each `[B, C_in, H, W]` -> (tokens `[B, h*w, C]`, grid (h, w))."""
        return self.patch_embeds

    def keep_stages(self, n: int) -> None:
        """Drop all but the first `n` stages, their embeddings and position embeddings with them
        (`prune_intermediate_layers`)."""
        self.patch_embeds, self.pos_embeds, self.stages = (
            self.patch_embeds[:n],
            self.pos_embeds[:n],
            self.stages[:n],
        )


default_cfgs = registry_cfgs(PyramidVisionTransformer.first_conv, "sar_pvt_small")


@register_model
def sar_pvt_small(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """PVT-Small (v1) with a SAR-ready last block.

    `pretrained` must be False: no weights are shipped (timm's `create_model` passes it).
    """
    return PyramidVisionTransformer.create("sar_pvt_small", pretrained, kwargs)
