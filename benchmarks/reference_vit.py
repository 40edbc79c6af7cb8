"""The public reference implementation's way of getting S, re-written as the baseline: every block
materialises its attention matrix, and the last one hands the full [B, H, N, N] logits to the loss."""

import torch

from sar.models import SARVisionTransformer


def materialise_attention(model: SARVisionTransformer) -> None:
    """Switch timm's blocks to their explicit (unfused) attention path."""
    for block in model.blocks[:-1]:
        block.attn.fused_attn = False


def reference_forward(model: SARVisionTransformer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and S, with S cut from the last block's full attention logits ("dot_qk")."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    for block in model.blocks[:-1]:
        x = block(x)
    last = model.blocks[-1]
    q, k, v = last.attn.qkv_heads(last.norm1(x))
    dot_qk = (q * last.attn.scale) @ k.transpose(-2, -1)  # [B, H, N, N]
    out = (dot_qk.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)
    x = model.norm(last._finish(x, last.attn.proj(out)))
    h, w = model.feature_grid
    S = dot_qk[:, :, 0, 1:].reshape(x.shape[0], -1, h, w)
    return model.forward_head(x), S
