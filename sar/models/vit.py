"""ViT-T/16 and ViT-S/16 (timm's DeiT configurations) with a SAR-ready last block.

Inputs of any multiple of the patch size: timm's `dynamic_img_size` (on by default here) interpolates the
position embedding to each input's patch grid (timm's `resample_abs_pos_embed`: bicubic, antialiased),
and S is on that grid, e.g. 30x30 for a 224-built ViT-S/16 fed 480 px, 6x6 for DINO's 96-px crops.
"""

from typing import Any

import torch
from timm.layers import to_2tuple
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sar.models.base import NUM_PREFIX_TOKENS, TokenModel, split_features, with_features
from sar.models.layers import (
    ClsAttention,
    Grid,
    LastBlock,
    SARBlock,
    build,
    model_kwargs,
    pretrained_cfg,
    registry_cfgs,
)

FIRST_CONV = "patch_embed.proj"  # timm's pretrained_cfg["first_conv"]: the patch projection


class SARVisionTransformer(TokenModel, VisionTransformer):
    """timm's VisionTransformer whose last block is a `SARBlock`.

    The last block takes over timm's own modules (norms, qkv, proj, MLP), so a model built with
    `last_block="standard"` has timm's parameter names, initialisation and function, and loads its weights.

    `dynamic_img_size` (timm's option) defaults to True when `img_size` is a multiple of `patch_size` (or
    with `dynamic_img_pad`): inputs of other sizes then get the position embedding resampled to their own
    patch grid. At the build size this is the identity, so outputs there are those of a fixed-size model.

    `forward_intermediates`, `get_intermediate_layers` and `prune_intermediate_layers` are `TokenModel`'s
    (timm's semantics; the SAR block takes the token grid); `set_grad_checkpointing` is timm's.
    """

    def __init__(self, last_block: LastBlock = "sar", **kwargs: Any) -> None:
        for key, required in (("class_token", True), ("global_pool", "token"), ("reg_tokens", 0)):
            if kwargs.setdefault(key, required) != required:
                raise ValueError(f"SAR needs one [CLS] token read by the head: {key} must be {required!r}")
        img_size, patch_size = to_2tuple(kwargs.get("img_size", 224)), to_2tuple(kwargs.get("patch_size", 16))
        divisible = kwargs.get("dynamic_img_pad", False) or all(
            s % p == 0 for s, p in zip(img_size, patch_size, strict=True)
        )
        if kwargs.setdefault("dynamic_img_size", divisible) and not divisible:
            raise ValueError(
                f"dynamic_img_size needs img_size {img_size} to be a multiple of patch_size {patch_size} "
                "(or dynamic_img_pad=True); pass dynamic_img_size=False for a fixed-size model"
            )
        VisionTransformer.__init__(self, **kwargs)
        old = self.blocks[-1]
        attn = ClsAttention(old.attn.qkv.in_features, old.attn.num_heads, attn_drop=old.attn.attn_drop.p)
        attn.qkv, attn.proj, attn.proj_drop = old.attn.qkv, old.attn.proj, old.attn.proj_drop
        drop_path = getattr(old.drop_path1, "drop_prob", 0.0)
        self.blocks[-1] = SARBlock(old.norm1, attn, old.norm2, old.mlp, drop_path=drop_path, mode=last_block)
        self.last_block = last_block

    @property
    def build_size(self) -> Grid:
        return tuple(self.patch_embed.img_size)

    @property
    def feature_grid(self) -> Grid:
        return tuple(self.patch_embed.grid_size)

    @property
    def similarity_grid(self) -> Grid:
        return self.feature_grid

    @property
    def size_multiple(self) -> Grid | None:
        if not self.dynamic_img_size:
            return None
        return (1, 1) if self.patch_embed.dynamic_img_pad else tuple(self.patch_embed.patch_size)

    def _multiple_reason(self) -> str:
        return "its patch size"

    def _fixed_size_hint(self) -> str:
        return (
            ": it was built with dynamic_img_size=False; build it with dynamic_img_size=True for other sizes"
        )

    def _grids(self, size):
        grid = (
            tuple(self.patch_embed.dynamic_feat_size(size)) if size != self.build_size else self.feature_grid
        )
        return grid, grid

    def _embed(self, x):
        """timm's `VisionTransformer._pos_embed` for one [CLS] token and no registers (the only prefix SAR
        takes), written here: FX keeps the position resampling a graph leaf (`resampled_position`)."""
        self.check_input(x)
        x = self.patch_embed(x)  # [B, h, w, C] with dynamic_img_size, else [B, h*w, C] on the build grid
        if self.dynamic_img_size:
            grid = (x.shape[1], x.shape[2])
            x = x.flatten(1, 2)
        else:
            grid = self.feature_grid
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        if self.pos_embed is None:
            x = torch.cat([cls, x], dim=1)
        else:
            pos = self.pos_embed
            if self.dynamic_img_size:
                prefix = 0 if self.no_embed_class else NUM_PREFIX_TOKENS
                pos = self.resampled_position(pos, grid, self.feature_grid, prefix)
            # DeiT-III (no_embed_class): the table covers the patches only; else [CLS] has an entry too
            x = torch.cat([cls, x + pos], dim=1) if self.no_embed_class else torch.cat([cls, x], dim=1) + pos
        return self.norm_pre(self.patch_drop(self.pos_drop(x))), grid

    def forward_head(self, x, pre_logits: bool = False) -> torch.Tensor:
        """timm's head on the final tokens `x` `[B, 1 + h*w, C]`: the logits of the [CLS] token, or with
        `pre_logits` the classifier's input `[B, C]`."""
        return VisionTransformer.forward_head(self, x, pre_logits=pre_logits)


def _create(name: str, pretrained: bool, defaults: dict, kwargs: dict) -> nn.Module:
    kwargs, features = split_features(model_kwargs(name, pretrained, kwargs))
    model = build(SARVisionTransformer, {**defaults, **kwargs})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(
        (model.in_chans, *model.patch_embed.img_size),
        FIRST_CONV,
        model.num_classes,
        architecture=name,
    )
    return with_features(model, features)


default_cfgs = registry_cfgs(FIRST_CONV, "sar_vit_tiny_patch16_224", "sar_vit_small_patch16_224")


@register_model
def sar_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ViT-T/16 (DeiT-Ti: dim 192, depth 12, 3 heads) with a SAR-ready last block (default `"sar"`).

    `pretrained` must be False: no weights are shipped (timm's `create_model` passes it).
    """
    defaults = {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3}
    return _create("sar_vit_tiny_patch16_224", pretrained, defaults, kwargs)


@register_model
def sar_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ViT-S/16 (DeiT-S: dim 384, depth 12, 6 heads) with a SAR-ready last block (default `"sar"`).

    `pretrained` must be False: no weights are shipped (timm's `create_model` passes it).
    """
    defaults = {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6}
    return _create("sar_vit_small_patch16_224", pretrained, defaults, kwargs)
