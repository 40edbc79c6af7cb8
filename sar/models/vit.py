"""ViT-T/16 and ViT-S/16 (timm's DeiT configurations) with a SAR-ready last block."""

from typing import Any

from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from sar.models.base import SimilarityModel, run_last_block
from sar.models.layers import ClsAttention, LastBlock, SARBlock, model_kwargs, pretrained_cfg


class SARVisionTransformer(SimilarityModel, VisionTransformer):
    """timm's VisionTransformer whose last block is a `SARBlock`.

    The last block takes over timm's own modules (norms, qkv, proj, MLP), so a model built with
    `last_block="standard"` has timm's parameter names, initialisation and function, and loads its weights.
    """

    def __init__(self, last_block: LastBlock = "sar", **kwargs: Any) -> None:
        for key, required in (("class_token", True), ("global_pool", "token"), ("reg_tokens", 0)):
            if kwargs.setdefault(key, required) != required:
                raise ValueError(f"SAR needs one [CLS] token read by the head: {key} must be {required!r}")
        VisionTransformer.__init__(self, **kwargs)
        old = self.blocks[-1]
        attn = ClsAttention(old.attn.qkv.in_features, old.attn.num_heads, attn_drop=old.attn.attn_drop.p)
        attn.qkv, attn.proj, attn.proj_drop = old.attn.qkv, old.attn.proj, old.attn.proj_drop
        drop_path = getattr(old.drop_path1, "drop_prob", 0.0)
        self.blocks[-1] = SARBlock(old.norm1, attn, old.norm2, old.mlp, drop_path=drop_path, mode=last_block)
        self.last_block = last_block
        self.feature_grid = self.similarity_grid = tuple(self.patch_embed.grid_size)

    def _tokens(self, x, with_similarity):
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        for block in self.blocks[:-1]:
            x = block(x)
        x, S = run_last_block(self.blocks[-1], x, self.feature_grid, with_similarity)
        return self.norm(x), S

    def forward_head(self, x, pre_logits: bool = False):
        return VisionTransformer.forward_head(self, x, pre_logits=pre_logits)


def _create(name: str, pretrained: bool, defaults: dict, kwargs: dict) -> SARVisionTransformer:
    model = SARVisionTransformer(**{**defaults, **model_kwargs(name, pretrained, kwargs)})
    model.pretrained_cfg = model.default_cfg = pretrained_cfg(
        (model.patch_embed.proj.in_channels, *model.patch_embed.img_size), model.num_classes
    )
    return model


@register_model
def sar_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> SARVisionTransformer:
    """ViT-T/16 (DeiT-Ti: dim 192, depth 12, 3 heads) with a SAR-ready last block (default `"sar"`)."""
    defaults = {"patch_size": 16, "embed_dim": 192, "depth": 12, "num_heads": 3}
    return _create("sar_vit_tiny_patch16_224", pretrained, defaults, kwargs)


@register_model
def sar_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> SARVisionTransformer:
    """ViT-S/16 (DeiT-S: dim 384, depth 12, 6 heads) with a SAR-ready last block (default `"sar"`)."""
    defaults = {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6}
    return _create("sar_vit_small_patch16_224", pretrained, defaults, kwargs)
