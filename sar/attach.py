"""`sar.attach(model, last_block="sar")`: SAR on a timm ViT you already have, its weights kept.

    model = sar.attach(timm.create_model("deit3_small_patch16_224", pretrained=True, num_classes=100))
    logits, S = model.forward_with_similarity(images)
    loss = F.cross_entropy(logits, targets) + 0.01 * sar.spatial_entropy(S)

Families: timm's `VisionTransformer` (ViT, DeiT and distilled DeiT, DeiT-III, ViT with registers), `Eva`
(EVA-02, RoPE-ViT) and `Beit`. The last block takes the skips of a row of Tab. 1b, as `SARBlock` does, and
S is that block's [CLS]-query attention logits (Eq. 4) against the patch keys of the input's own token
grid, with the family's q/k norms, rotary embedding or relative position bias applied as the family
applies them. Attach before building the optimizer: `"sar"` and `"no_skips"` drop the LayerNorm before
the MLP.

timm versions: tested with timm 1.0.31 (the version constraints.txt pins); it needs timm 1.0.20 or later
(`AttentionRope` and the `rotate_half` option of EVA's rotary embedding). `forward_with_similarity` embeds
the input through the model's own `_pos_embed` (ViT, EVA: timm's private step of `forward_features` before
the blocks), so it follows the model's options (registers, distillation token, position table without
[CLS], rotary embedding) as timm does. tests/test_attach.py checks that what it gives the blocks is exactly
what `forward_features` gives them, so a timm that changes `_pos_embed` fails that test; one without it is
refused by `attach`. A whole attached model pickles (`torch.save(model)`, then
`torch.load(..., weights_only=False)`).
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import timm
import torch
import torch.nn.functional as F
from timm.layers import Attention, AttentionRope, apply_rot_embed_cat
from timm.models import checkpoint
from timm.models.beit import Attention as BeitAttention
from timm.models.beit import Beit
from timm.models.beit import Block as BeitBlock
from timm.models.eva import Eva, EvaAttention, EvaBlock
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from sar.entropy import cls_similarity
from sar.models.layers import Grid, LastBlock, check_last_block

# q, k, v `[B, H, N, d]` exactly as the attention uses them (norms and rotary embedding applied), and the
# additive bias of its logits (BEiT's relative position bias) or None
Heads = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]
BlockKwargs = Callable[[int], dict[str, Any]]  # block index -> the family's per-block arguments
# what each variant replaces by the identity: the LayerNorm before the MLP, the drop path of a branch that
# lost its skip (as in `SARBlock`)
REMOVED = {
    "standard": (),
    "no_msa_skip": ("drop_path1",),
    "sar": ("drop_path1", "norm2"),
    "no_skips": ("drop_path1", "norm2", "drop_path2"),
}


def _fused_qkv(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v from one fused projection; EVA and BEiT add separate q and v biases (k has none)."""
    b, n, _ = x.shape
    if getattr(attn, "q_bias", None) is None:
        qkv = attn.qkv(x)
    else:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = attn.qkv(x) + bias if attn.qkv_bias_separate else F.linear(x, attn.qkv.weight, bias)
    return qkv.reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


class AttachedBlock(nn.Module):
    """A timm pre-norm block with the skips of Tab. 1b (as `SARBlock`), built from the block's own modules
    under their own names, so the state dict keeps its keys (less norm2 in `"sar"` and `"no_skips"`).

    - `"standard"`:    z' = MSA(LN(z)) + z;  z = MLP(LN(z')) + z'   (the block unchanged)
    - `"no_msa_skip"`: z' = MSA(LN(z));      z = MLP(LN(z')) + z'
    - `"sar"`:         z' = MSA(LN(z));      z = MLP(z') + z'
    - `"no_skips"`:    z' = MSA(LN(z));      z = MLP(z')

    Layer scale scales its branch in every variant; drop path only ever drops a branch that has a skip.
    `forward` runs the attention's own forward (any mask or setting the family takes);
    `forward_with_similarity` forms q, k, v as the family does (`heads`), attends with fused
    `scaled_dot_product_attention` and takes S from the [CLS] row alone.
    """

    def __init__(self, block: nn.Module, mode: LastBlock, num_prefix_tokens: int) -> None:
        super().__init__()
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        for name, child in block.named_children():  # the block's order, so parameters keep theirs
            self.add_module(name, nn.Identity() if name in REMOVED[mode] else child)
        for name, param in block.named_parameters(recurse=False):  # EVA's and BEiT's layer scale
            self.register_parameter(name, param)

    def heads(self, x: torch.Tensor, **attn_kwargs: Any) -> Heads:
        """q, k, v and the logits' bias as the family's attention forms them from its input x."""
        raise NotImplementedError

    def _scaled(self, x: torch.Tensor, branch: int) -> torch.Tensor:
        """A branch's output times its layer scale: a LayerScale module in timm's ViT (ls1, ls2), a bare
        parameter in EVA and BEiT (gamma_1, gamma_2); absent without init_values."""
        module = getattr(self, f"ls{branch}", None)
        if module is not None:
            return module(x)
        gamma = getattr(self, f"gamma_{branch}", None)
        return x if gamma is None else gamma * x

    def _finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        a = self._scaled(attn_out, 1)
        z = x + self.drop_path1(a) if self.mode == "standard" else a
        mlp_out = self._scaled(self.mlp(self.norm2(z)), 2)
        return mlp_out if self.mode == "no_skips" else z + self.drop_path2(mlp_out)

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        return self._finish(x, self.attn(self.norm1(x), **attn_kwargs))

    def forward_with_similarity(
        self, x: torch.Tensor, grid: Grid, **attn_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and S `[B, H, kh, kw]`: one extra `[B, H, 1, n]` product on the patch keys."""
        attn, y, p = self.attn, self.norm1(x), self.num_prefix_tokens
        q, k, v, bias = self.heads(y, **attn_kwargs)
        S = cls_similarity(q[:, :, 0], k[:, :, p:], grid=grid, scale=attn.scale)
        if bias is not None:
            S = S + bias[..., 0, p:].unflatten(-1, grid)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0
        )
        out = out.transpose(1, 2).flatten(2)
        if (norm := getattr(attn, "norm", None)) is not None:  # BEiT's attention has no norm and no gate
            out = norm(out)
        if (gate := getattr(attn, "gate", None)) is not None:
            out = out * gate(y).sigmoid()
        return self._finish(x, attn.proj_drop(attn.proj(out))), S


class ViTAttachedBlock(AttachedBlock):
    def heads(self, x: torch.Tensor) -> Heads:
        """timm's Attention: one qkv projection, then the per-head q/k norms (Identity without qk_norm)."""
        q, k, v = _fused_qkv(self.attn, x)
        return self.attn.q_norm(q), self.attn.k_norm(k), v, None


class EvaAttachedBlock(AttachedBlock):
    def heads(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> Heads:
        """EVA's attention and AttentionRope: fused or separate projections (grouped k, v heads), q/k norms,
        then the rotary embedding on the patch tokens."""
        attn = self.attn
        if attn.qkv is not None:
            q, k, v = _fused_qkv(attn, x)
        else:
            kv_heads = getattr(attn, "num_kv_heads", attn.num_heads)
            projections = ((attn.q_proj, attn.num_heads), (attn.k_proj, kv_heads), (attn.v_proj, kv_heads))
            q, k, v = (proj(x).reshape(*x.shape[:2], h, -1).transpose(1, 2) for proj, h in projections)
        q, k = attn.q_norm(q), attn.k_norm(k)
        if rope is not None:
            p = attn.num_prefix_tokens

            def rotate(t: torch.Tensor) -> torch.Tensor:
                rotated = apply_rot_embed_cat(t[:, :, p:], rope, half=attn.rotate_half)
                return torch.cat([t[:, :, :p], rotated], dim=2).type_as(v)

            q, k = rotate(q), rotate(k)
        groups = getattr(attn, "num_kv_groups", 1)
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return q, k, v, None


class BeitAttachedBlock(AttachedBlock):
    def heads(self, x: torch.Tensor, shared_rel_pos_bias: torch.Tensor | None = None) -> Heads:
        """BEiT's attention: no q/k norm; its own relative position bias plus the model's shared one."""
        attn, bias = self.attn, shared_rel_pos_bias
        q, k, v = _fused_qkv(attn, x)
        if attn.relative_position_bias_table is not None:
            own = attn._get_rel_pos_bias()
            bias = own if bias is None else own + bias
        return q, k, v, bias


def _vit_stem(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, BlockKwargs]:
    """`VisionTransformer.forward_features` up to the blocks (the distilled DeiT has its own _pos_embed)."""
    x = model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x))))
    return x, lambda i: {}


def _eva_stem(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, BlockKwargs]:
    """`Eva.forward_features` up to the blocks: the rotary embedding of the input's grid (one per block
    with RoPE-Mixed)."""
    x, rope = model._pos_embed(model.patch_embed(x))
    per_block = model.rope_mixed and rope is not None
    return model.norm_pre(x), lambda i: {"rope": rope[i] if per_block else rope}


def _beit_stem(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, BlockKwargs]:
    """`Beit.forward_features` up to the blocks, with the shared relative position bias if it has one."""
    x = model.patch_embed(x)
    x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
    if model.pos_embed is not None:
        x = x + model.pos_embed
    bias = model.rel_pos_bias() if model.rel_pos_bias is not None else None
    return model.pos_drop(x), lambda i: {"shared_rel_pos_bias": bias}


@dataclass(frozen=True)
class _Family:
    model: type[nn.Module]
    block: type[nn.Module]
    attentions: tuple[type[nn.Module], ...]
    attached: type[AttachedBlock]
    stem: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, BlockKwargs]]
    private: tuple[str, ...] = ()  # timm's private methods the stem calls


FAMILIES = (
    _Family(VisionTransformer, Block, (Attention,), ViTAttachedBlock, _vit_stem, ("_pos_embed",)),
    _Family(Eva, EvaBlock, (EvaAttention, AttentionRope), EvaAttachedBlock, _eva_stem, ("_pos_embed",)),
    _Family(Beit, BeitBlock, (BeitAttention,), BeitAttachedBlock, _beit_stem),
)


class AttachedModel(nn.Module):
    """What `attach` adds to the model's own class: `forward_with_similarity`,
    `forward_features_with_similarity` and `similarity_grid_for`."""

    _sar_family: ClassVar[_Family]
    last_block: str

    def similarity_grid_for(self, size: Grid) -> Grid:
        """The grid of S (kh, kw) for an input of spatial size (H, W): its patch grid."""
        if getattr(self, "dynamic_img_size", False):
            return tuple(self.patch_embed.dynamic_feat_size((int(size[0]), int(size[1]))))
        return tuple(self.patch_embed.grid_size)

    def forward_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (as `forward`) and S `[B, H, kh, kw]` from one pass; grad checkpointing as `forward`."""
        tokens, S = self.forward_features_with_similarity(x)
        return self.forward_head(tokens), S

    def forward_features_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final tokens `x` leads to (after the model's norm: prefix tokens, then the patch grid) and S
        `[B, H, kh, kw]`, from one pass: what a training loop with a head of its own needs."""
        grid = self.similarity_grid_for(x.shape[-2:])
        tokens, block_kwargs = self._sar_family.stem(self, x)
        *body, last = self.blocks
        for i, block in enumerate(body):
            tokens = self._run(block, tokens, **block_kwargs(i))
        tokens, S = self._run(last.forward_with_similarity, tokens, grid, **block_kwargs(len(body)))
        return self.norm(tokens), S

    def __reduce_ex__(self, protocol: int) -> tuple:
        """Pickle (torch.save of the whole model, multiprocessing) by the model's own class: the class
        `attach` made has no importable name, so pickle rebuilds it through `_attached_instance`."""
        base = next(c for c in type(self).__mro__[1:] if not issubclass(c, AttachedModel))
        return _attached_instance, (base,), self.__getstate__()

    def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`, recomputed in the backward pass when grad checkpointing is on (timm's
        non-reentrant checkpoint: S comes back with its gradient)."""
        return checkpoint(fn, *args, **kwargs) if self.grad_checkpointing else fn(*args, **kwargs)


@functools.cache
def _attached_class(cls: type[nn.Module], family: _Family) -> type[nn.Module]:
    """One subclass per model class, so that `attach` keeps the model (and its isinstance) as it is."""
    return type(
        f"{cls.__name__}WithSAR", (AttachedModel, cls), {"_sar_family": family, "__module__": __name__}
    )


def _family_of(cls: type[nn.Module]) -> _Family | None:
    return next((f for f in FAMILIES if issubclass(cls, f.model)), None)


def _attached_instance(cls: type[nn.Module]) -> nn.Module:
    """An empty instance of `cls` with SAR attached, for pickle to fill in with the model's state."""
    return object.__new__(_attached_class(cls, _family_of(cls)))


def attach(model: nn.Module, last_block: LastBlock = "sar") -> nn.Module:
    """Give a timm ViT-family model the last block `last_block` of Tab. 1b and `forward_with_similarity`.

    The model is changed in place and returned: same parameters, same names (less the last block's norm2
    where the variant has no LayerNorm before the MLP), same timm methods. A model that cannot give S says
    why: one without a [CLS] token (Swin, a ViT pooling by global average with class_token=False), a
    family or block kind not listed in `FAMILIES`, patch dropout (S needs every patch key).
    """
    check_last_block(last_block)
    name = type(model).__name__
    if isinstance(model, AttachedModel):
        raise ValueError(
            f"sar.attach: SAR is already attached to this {name} (last_block={model.last_block!r})"
        )
    if getattr(model, "cls_token", None) is None:
        why = "was built with class_token=False" if hasattr(model, "cls_token") else "has no class token"
        raise ValueError(
            f"sar.attach: {name} {why}, so there is no [CLS] query whose attention row S (Eq. 4) could be"
        )
    family = _family_of(type(model))
    if family is None:
        supported = ", ".join(f.model.__name__ for f in FAMILIES)
        raise ValueError(f"sar.attach takes timm's {supported} models; got {name}")
    missing = [method for method in family.private if not callable(getattr(model, method, None))]
    if missing:
        raise ValueError(
            f"sar.attach: {name} has no {', '.join(missing)} in timm {timm.__version__}; sar.attach embeds "
            "the input through it and is tested with timm 1.0.31"
        )
    block = model.blocks[-1]
    if type(block) is not family.block or type(block.attn) not in family.attentions:
        attentions = " or ".join(a.__name__ for a in family.attentions)
        found = f"{type(block).__name__} with {type(getattr(block, 'attn', None)).__name__}"
        raise ValueError(
            f"sar.attach: {name}'s last block is a {found}; it takes timm's pre-norm "
            f"{family.block.__name__} with {attentions}"
        )
    if getattr(getattr(model, "patch_drop", None), "prob", 0.0) > 0:
        raise ValueError(
            f"sar.attach: {name} drops patch tokens in training (patch_drop_rate > 0), so S would not "
            "cover the patch grid; build it with patch_drop_rate=0"
        )
    model.blocks[-1] = family.attached(block, last_block, model.num_prefix_tokens)
    model.__class__ = _attached_class(type(model), family)
    model.last_block = last_block
    return model
