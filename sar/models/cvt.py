"""CvT-13 (Wu et al., 2021) with a SAR-ready last block.

Facts from the official code: three stages of overlapping convolutional token embedding (kernel 7/3/3,
stride 4/2/2, padding 2/1/1, then LayerNorm), widths 64/192/384, heads 1/3/6, depths 1/2/10, MLP ratio 4
with QuickGELU, no position embedding; attention projects q, k, v with a depthwise 3x3 conv and
BatchNorm (stride 1 for q, 2 for k and v) and then a linear layer, and scales logits by the full width
(dim ** -0.5), not the head width; the [CLS] token joins in stage 3 and bypasses the conv projections.
20.0M parameters, 4.5 GMACs at 224.

Grid: the final token grid is 14x14 at 224, but the last block's keys come from a stride-2 conv, so the
[CLS] query meets a 7x7 grid of patch keys and S is 7x7, the grid the paper reports for CvT.

Other input sizes: with no position embedding the tokens simply follow the input; sizes must be multiples
of 32 for CvT-13 (every stage's token grid and its stride-2 key/value grid divide exactly), and S is then
the last stage's key grid, input / 32.
"""

import math
from functools import partial
from typing import Any

import torch
from timm.layers import QuickGELU
from timm.models import register_model
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

LayerNorm = partial(nn.LayerNorm, eps=1e-5)
KV_STRIDE = 2  # the keys' and values' depthwise conv (kernel 3, padding 1)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ConvEmbed(nn.Module):
    """Overlapping patches (strided conv) and a LayerNorm over channels."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=kernel, stride=stride, padding=padding)
        self.norm = LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[2], x.shape[3])


class ConvProjection(nn.Sequential):
    """Depthwise conv + BatchNorm over the token grid (the 'dw_bn' projection)."""

    def __init__(self, dim: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, kernel_size=3, stride=stride, padding=1, groups=dim, bias=False)
        self.bn = nn.BatchNorm2d(dim)


class ConvAttention(FusedAttentionOutput):
    def __init__(
        self, dim: int, num_heads: int, with_cls: bool, qkv_bias: bool, attn_drop: float, proj_drop: float
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5  # the full width, as in the official code
        self.with_cls = with_cls
        self.conv_proj_q = ConvProjection(dim, stride=1)
        self.conv_proj_k = ConvProjection(dim, stride=KV_STRIDE)
        self.conv_proj_v = ConvProjection(dim, stride=KV_STRIDE)
        self.proj_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def _qkv(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Grid]:
        b, _, c = x.shape
        cls, x = (x[:, :1], x[:, 1:]) if self.with_cls else (x[:, :0], x)
        fmap = x.transpose(1, 2).reshape(b, c, *grid)
        projected = []
        for conv in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            y = conv(fmap)
            projected.append(torch.cat([cls, y.flatten(2).transpose(1, 2)], dim=1))
        kv_grid = (y.shape[2], y.shape[3])
        q, k, v = (
            self._heads(linear(t))
            for linear, t in zip((self.proj_q, self.proj_k, self.proj_v), projected, strict=True)
        )
        return q, k, v, kv_grid

    def forward(self, x: torch.Tensor, grid: Grid) -> torch.Tensor:
        return self._out(*self._qkv(x, grid)[:3])

    def forward_with_similarity(self, x: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.with_cls:
            raise ValueError("S needs the [CLS] token: use it in the stage that has one")
        q, k, v, kv_grid = self._qkv(x, grid)
        return self._out(q, k, v), cls_row_similarity(q, k, self.scale, kv_grid, self.similarity)


class ConvolutionalVisionTransformer(PyramidModel):
    """CvT: three stages of convolutional token embedding and convolutional-projection blocks; [CLS]
    joins the last. Its feature maps (`forward_intermediates`, `features_only`) have strides 4/8/16.

    Arguments (defaults: CvT-13): `img_size` (the square build size) and `in_chans` of the images,
    `num_classes` (0: no classifier); per stage, `patch_sizes`, `patch_strides` and `patch_paddings` of
    the embedding conv, `embed_dims` (widths), `num_heads` and `depths` (blocks); `mlp_ratio` (MLP hidden
    width / width), `qkv_bias` (biases of the q, k, v linear layers), `drop_rate` (dropout of each
    stage's input tokens, after the attention projection and in the MLP), `attn_drop_rate` (attention
    dropout), `drop_path_rate` (stochastic depth, linear up to it over the [CLS] stage only, as CvT-13 is
    configured), `last_block` (Tab. 1b, see `SARBlock`) and `dense_cls` (must be True: see
    `PyramidModel`; CvT projects [CLS] apart from its token map, so the [CLS] stage has no map without it).
    """

    first_conv = "embeds.0.proj"

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        patch_sizes: tuple[int, ...] = (7, 3, 3),
        patch_strides: tuple[int, ...] = (4, 2, 2),
        patch_paddings: tuple[int, ...] = (2, 1, 1),
        embed_dims: tuple[int, ...] = (64, 192, 384),
        num_heads: tuple[int, ...] = (1, 3, 6),
        depths: tuple[int, ...] = (1, 2, 10),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        last_block: LastBlock = "sar",
        dense_cls: bool = True,
    ) -> None:
        super().__init__()
        if not dense_cls:
            raise ValueError(
                "CvT's last stage projects [CLS] apart from its token map in every block and has no "
                "official backbone without it: dense_cls must be True"
            )
        check_stages(
            patch_sizes=patch_sizes,
            patch_strides=patch_strides,
            patch_paddings=patch_paddings,
            embed_dims=embed_dims,
            num_heads=num_heads,
            depths=depths,
        )
        self.img_size = img_size
        self.in_chans = in_chans
        self.last_block = last_block
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        size, chans = img_size, in_chans
        n_stages = len(depths)
        self.embed_convs = tuple(zip(patch_sizes, patch_strides, patch_paddings, strict=True))
        self.cls_stage = n_stages - 1
        strides = [math.prod(patch_strides[: i + 1]) for i in range(n_stages)]
        self.feature_info = [
            {"module": f"stages.{i}", "num_chs": dim, "reduction": stride}
            for i, (dim, stride) in enumerate(zip(embed_dims, strides, strict=True))
        ]
        self.stride = math.lcm(*(stride * KV_STRIDE for stride in strides))
        for i in range(n_stages):
            dim, last_stage = embed_dims[i], i == n_stages - 1
            size = _conv_out(size, patch_sizes[i], patch_strides[i], patch_paddings[i])
            self.embeds.append(ConvEmbed(chans, dim, patch_sizes[i], patch_strides[i], patch_paddings[i]))
            # stochastic depth only in the stage with the [CLS] token, as configured for CvT-13
            dpr = drop_path_rates(drop_path_rate if last_stage else 0.0, depths[i])
            blocks = nn.ModuleList()
            for j in range(depths[i]):
                attn = ConvAttention(dim, num_heads[i], last_stage, qkv_bias, attn_drop_rate, drop_rate)
                mode = last_block if last_stage and j == depths[i] - 1 else "standard"
                blocks.append(
                    SARBlock.build(
                        dim,
                        attn,
                        mlp_ratio,
                        LayerNorm,
                        act_layer=QuickGELU,
                        drop=drop_rate,
                        drop_path=dpr[j],
                        mode=mode,
                    )
                )
            self.stages.append(blocks)
            chans = dim
        self.feature_grid = (size, size)
        self.similarity_grid = self._grids(self.build_size)[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, chans))
        self.pos_drop = nn.Dropout(drop_rate)
        self.norm = LayerNorm(chans)
        self._init_head_and_weights(chans, num_classes)

    @property
    def size_multiple(self) -> Grid:
        return (self.stride, self.stride)

    def _multiple_reason(self) -> str:
        return "so that every stage's token grid and its stride-2 key grid divide exactly"

    def _grids(self, size):
        h, w = size
        for kernel, stride, padding in self.embed_convs:
            h, w = _conv_out(h, kernel, stride, padding), _conv_out(w, kernel, stride, padding)
        return (h, w), (_conv_out(h, 3, KV_STRIDE, 1), _conv_out(w, 3, KV_STRIDE, 1))

    def stage_embeds(self) -> nn.ModuleList:
        """The per-stage `ConvEmbed`s, each `[B, C_in, H, W]` -> (tokens `[B, h*w, C]`, grid (h, w))."""
        return self.embeds

    def keep_stages(self, n: int) -> None:
        """Drop all but the first `n` stages, their embeddings with them (`prune_intermediate_layers`)."""
        self.embeds, self.stages = self.embeds[:n], self.stages[:n]


default_cfgs = registry_cfgs(ConvolutionalVisionTransformer.first_conv, "sar_cvt_13")


@register_model
def sar_cvt_13(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CvT-13 with a SAR-ready last block. S is 7x7 at 224 (see the module docstring).

    `pretrained` must be False: no weights are shipped (timm's `create_model` passes it).
    """
    return ConvolutionalVisionTransformer.create("sar_cvt_13", pretrained, kwargs)
