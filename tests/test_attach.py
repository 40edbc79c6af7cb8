"""`sar.attach` on timm's own ViT-family definitions (random weights, small configs): the standard block keeps
the model's function exactly, S is the [CLS] row of the last attention's logits written out from timm's
math, the variants of Tab. 1b follow their formulas, and gradients, grad checkpointing and torch.compile
work. Inputs are 32x48 (a 4x6 token grid): non-square, through dynamic_img_size where the family has it."""

import copy

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from timm.models.vision_transformer import Block, ResPostBlock

import sar
from sar.models import LAST_BLOCKS

SMALL = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4, "num_classes": 5}
SIZE, GRID = (32, 48), (4, 6)
CASES = {
    "vit": ("vit_tiny_patch16_224", {}),
    "vit_no_qkv_bias": ("vit_tiny_patch16_224", {"qkv_bias": False}),
    "vit_qk_norm": ("vit_tiny_patch16_224", {"qk_norm": True}),
    "vit_no_embed_class": ("vit_tiny_patch16_224", {"no_embed_class": True}),
    "deit": ("deit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}),  # [CLS] and distillation token
    "deit3": ("deit3_small_patch16_224", {}),  # layer scale, no_embed_class
    "vit_reg4": ("vit_small_patch14_reg4_dinov2", {}),  # [CLS] and four registers
    "eva02": ("eva02_tiny_patch14_224", {"init_values": 0.1}),  # rope, SwiGLU, fused qkv with q/v biases
    "eva02_separate_qkv": ("eva02_base_patch14_224", {}),  # q/k/v projections, normed SwiGLU
    "rope_vit": ("vit_small_patch16_rope_224", {}),  # AttentionRope, axial rope
    "rope_vit_gqa": ("vit_small_patch16_rope_224", {"qkv_fused": False, "num_kv_heads": 2}),
    "rope_mixed_vit": ("vit_small_patch16_rope_mixed_224", {}),  # one rope per block
    "beit": ("beit_base_patch16_224", {}),  # relative position bias per block
    "beit_shared_bias": (
        "beit_base_patch16_224",
        {"use_rel_pos_bias": False, "use_shared_rel_pos_bias": True},
    ),
}
LAYER_SCALED = ("deit3", "eva02", "beit")  # one per family, each with layer scale


def build(case: str, **kwargs) -> torch.nn.Module:
    """A small random member; every parameter redrawn so that zero-initialised biases, position tables and
    layer scales all matter."""
    name, case_kwargs = CASES[case]
    size = {"img_size": SIZE} if name.startswith("beit") else {"dynamic_img_size": True}  # BEiT: fixed size
    torch.manual_seed(0)
    model = timm.create_model(name, **{**SMALL, **size, **case_kwargs, **kwargs}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.3)
    return model


def attached(case: str, mode: str, **kwargs) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The unmodified model and a copy with SAR attached."""
    reference = build(case, **kwargs)
    return reference, sar.attach(copy.deepcopy(reference), last_block=mode)


def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, *SIZE)


def last_inputs(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """The inputs (and keyword arguments: rope, relative position bias) of the last block and of its
    attention in a forward pass, captured with hooks."""
    seen = {}
    block = model.blocks[-1]
    hooks = [
        module.register_forward_pre_hook(
            lambda mod, args, kwargs, key=key: seen.update({key: (args[0], kwargs)}), with_kwargs=True
        )
        for key, module in (("block", block), ("attn", block.attn))
    ]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen


def scaled(block: torch.nn.Module, branch: int, x: torch.Tensor) -> torch.Tensor:
    """A branch output times the block's layer scale: timm's ViT Block has LayerScale modules, EVA's and
    BEiT's blocks a bare gamma (None without init_values)."""
    if isinstance(block, Block):
        return (block.ls1 if branch == 1 else block.ls2)(x)
    gamma = block.gamma_1 if branch == 1 else block.gamma_2
    return x if gamma is None else gamma * x


def expected_block(block: torch.nn.Module, mode: str, x: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """Tab. 1b written out on the unmodified block's modules (eval: no drop path)."""
    a = scaled(block, 1, block.attn(block.norm1(x), **kwargs))

    def mlp(z: torch.Tensor) -> torch.Tensor:
        return scaled(block, 2, block.mlp(z))

    return {
        "standard": lambda: x + a + mlp(block.norm2(x + a)),
        "no_msa_skip": lambda: a + mlp(block.norm2(a)),
        "sar": lambda: a + mlp(a),
        "no_skips": lambda: mlp(a),
    }[mode]()


def reference_similarity(model: torch.nn.Module, y: torch.Tensor, kwargs: dict) -> torch.Tensor:
    """S from the last attention's weights and its input y, written out from timm's definitions: q = x W_q
    (+ bias; EVA's and BEiT's k has none), per-head q/k norm, EVA's rotary embedding on the patch tokens,
    q_cls . k / sqrt(d), plus BEiT's relative position bias of the [CLS] query (its table's entry
    num_relative_distance - 3, the same for every patch key)."""
    attn, p = model.blocks[-1].attn, model.num_prefix_tokens
    b, n, _ = y.shape
    if getattr(attn, "qkv", None) is None:
        q, k = attn.q_proj(y), attn.k_proj(y)
    else:
        bias = attn.qkv.bias
        if getattr(attn, "q_bias", None) is not None:
            bias = torch.cat((attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias))
        q, k, _ = F.linear(y, attn.qkv.weight, bias).chunk(3, dim=-1)
    q = q.reshape(b, n, attn.num_heads, -1).transpose(1, 2)
    k = k.reshape(b, n, -1, q.shape[-1]).transpose(1, 2)  # fewer k heads with grouped-query attention
    if hasattr(attn, "q_norm"):  # BEiT's attention has no q/k norm
        q, k = attn.q_norm(q), attn.k_norm(k)
    k = k.repeat_interleave(attn.num_heads // k.shape[1], dim=1)
    k_patches = k[:, :, p:]
    if kwargs.get("rope") is not None:
        k_patches = apply_rot_embed_cat(k_patches, kwargs["rope"], half=attn.rotate_half)
    s = torch.einsum("bhd,bhnd->bhn", q[:, :, 0], k_patches) * q.shape[-1] ** -0.5
    tables = [getattr(attn, "relative_position_bias_table", None)]  # the block's own, then the shared one
    if getattr(model, "rel_pos_bias", None) is not None:
        tables.append(model.rel_pos_bias.relative_position_bias_table)
    for table in tables:
        if table is not None:
            s = s + table[-3][:, None]
    return s.reshape(b, attn.num_heads, *GRID)


@pytest.mark.parametrize("case", CASES)
def test_standard_keeps_the_function_and_the_weights(case):
    reference, model = attached(case, "standard")
    x = images()
    expected = reference(x)
    assert torch.equal(model(x), expected)
    assert torch.equal(model.forward_with_similarity(x)[0], expected)
    state, reference_state = model.state_dict(), reference.state_dict()
    assert list(state) == list(reference_state)
    assert all(torch.equal(state[key], reference_state[key]) for key in state)
    assert isinstance(model, type(reference)) and model.num_prefix_tokens == reference.num_prefix_tokens


@pytest.mark.parametrize("case", CASES)
def test_similarity_is_the_cls_row_of_the_last_attention_logits(case):
    reference, model = attached(case, "sar")
    x = images()
    y, kwargs = last_inputs(reference, x)["attn"]
    _, S = model.forward_with_similarity(x)
    heads = reference.blocks[-1].attn.num_heads
    assert S.shape == (2, heads, *GRID) and model.similarity_grid_for(SIZE) == GRID
    torch.testing.assert_close(S, reference_similarity(reference, y, kwargs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", LAST_BLOCKS)
def test_last_block_variants_follow_table_1b(case, mode):
    reference, model = attached(case, mode)
    x = images()
    block_in, kwargs = last_inputs(reference, x)["block"]
    out = expected_block(reference.blocks[-1], mode, block_in, kwargs)
    torch.testing.assert_close(model.blocks[-1](block_in, **kwargs), out, rtol=1e-5, atol=1e-5)
    expected_logits = reference.forward_head(reference.norm(out))
    torch.testing.assert_close(model(x), expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.forward_with_similarity(x)[0], expected_logits, rtol=1e-5, atol=1e-5)
    last_norm2 = {
        key for key in reference.state_dict() if key.startswith(f"blocks.{SMALL['depth'] - 1}.norm2.")
    }
    dropped = last_norm2 if mode in ("sar", "no_skips") else set()
    assert last_norm2 and set(model.state_dict()) == set(reference.state_dict()) - dropped


@pytest.mark.parametrize("case", LAYER_SCALED)
@pytest.mark.parametrize("mode", LAST_BLOCKS)
def test_drop_path_drops_only_a_branch_that_has_a_skip(case, mode):
    reference = build(case, drop_path_rate=0.1)
    last = reference.blocks[-1]
    last.drop_path1.drop_prob = last.drop_path2.drop_prob = 1.0  # a dropped branch adds exactly 0
    x, kwargs = last_inputs(reference, images())["block"]
    a = scaled(last, 1, last.attn(last.norm1(x), **kwargs))
    expected = {"standard": x, "no_msa_skip": a, "sar": a, "no_skips": scaled(last, 2, last.mlp(a))}[mode]
    block = sar.attach(copy.deepcopy(reference), last_block=mode).blocks[-1].train()
    torch.testing.assert_close(block(x, **kwargs), expected, rtol=1e-5, atol=1e-5)
    family_kwargs = {key: kwargs[key] for key in ("rope", "shared_rel_pos_bias") if key in kwargs}  # no masks
    out, _ = block.forward_with_similarity(x, GRID, **family_kwargs)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_gradients_reach_s(case):
    model = sar.attach(build(case))
    _, S = model.forward_with_similarity(images())
    grads = torch.autograd.grad(
        S.square().sum(), [model.patch_embed.proj.weight, model.blocks[-1].norm1.weight]
    )
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_grad_checkpointing_recomputes_and_gives_the_same_gradients(case):
    model, x = sar.attach(build(case)), images()
    calls = []
    model.blocks[-1].norm1.register_forward_hook(lambda *args: calls.append(1))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        logits, S = model.forward_with_similarity(x)
        (logits.square().sum() + S.square().sum()).backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    plain = gradients()
    assert len(calls) == 1
    plain_logits = model(x)
    model.set_grad_checkpointing(True)
    calls.clear()
    checkpointed = gradients()
    assert len(calls) == 2  # the forward pass, then again in the backward pass
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(model(x), plain_logits)


@pytest.mark.parametrize("case", ["vit", "deit_distilled", "eva02", "beit"])
def test_timm_interface_is_kept(case):
    reference = build(case)
    model = sar.attach(copy.deepcopy(reference))
    x = images()
    twin = copy.deepcopy(model)  # as EMA copies are made
    torch.testing.assert_close(twin.forward_with_similarity(x)[1], model.forward_with_similarity(x)[1])
    model.reset_classifier(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, S = model.forward_with_similarity(x)
    assert logits.shape == (2, 3) and S.dtype == torch.float32
    assert model.forward_features(x).shape[1] == model.num_prefix_tokens + GRID[0] * GRID[1]
    assert isinstance(model, type(reference)) and len(model.blocks) == len(reference.blocks)


@pytest.mark.slow
def test_compiled_model_matches_eager():
    model, x = sar.attach(build("vit")), images()
    logits, S = torch.compile(model.forward_with_similarity, fullgraph=True)(x)
    ref_logits, ref_S = model.forward_with_similarity(x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(S, ref_S, rtol=1e-4, atol=1e-4)
    (logits.sum() + S.sum()).backward()
    torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-4, atol=1e-4)


REFUSED = {
    "Swin": (
        lambda: timm.create_model(
            "swin_tiny_patch4_window7_224",
            img_size=32,
            window_size=4,
            embed_dim=16,
            depths=(1, 1),
            num_heads=(1, 2),
        ),
        r"SwinTransformer has no class token, so there is no \[CLS\] query",
    ),
    "ViT pooling by global average": (
        lambda: timm.create_model("vit_base_patch16_reg4_gap_256", **SMALL),
        r"VisionTransformer was built with class_token=False, so there is no \[CLS\] query",
    ),
    "RoPE-ViT pooling by global average": (
        lambda: timm.create_model("vit_medium_patch16_rope_reg1_gap_256", **SMALL),
        r"Eva was built with class_token=False",
    ),
    "another family": (
        lambda: timm.create_model("cait_xxs24_224", **SMALL),
        "takes timm's VisionTransformer",
    ),
    "a SAR-ready model": (
        lambda: timm.create_model("sar_vit_tiny_patch16_224", **SMALL),
        "last block is a SARBlock with ClsAttention; it takes timm's pre-norm Block with Attention",
    ),
    "a post-norm block": (
        lambda: timm.create_model("vit_tiny_patch16_224", block_fn=ResPostBlock, **SMALL),
        "last block is a ResPostBlock",
    ),
    "patch dropout": (
        lambda: timm.create_model("vit_tiny_patch16_224", patch_drop_rate=0.5, **SMALL),
        "drops patch tokens in training",
    ),
    "a model attached already": (lambda: sar.attach(build("vit")), "already attached"),
}


@pytest.mark.parametrize("what", REFUSED)
def test_what_cannot_give_s_is_refused_saying_why(what):
    make, message = REFUSED[what]
    model = make()
    with pytest.raises(ValueError, match=message):
        sar.attach(model)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="last_block must be one of"):
        sar.attach(build("vit"), last_block="no_ln")


@pytest.mark.parametrize(
    "case", ["vit", "deit_distilled", "deit3", "vit_reg4", "eva02", "rope_mixed_vit", "beit"]
)
def test_stem_is_what_the_model_feeds_its_blocks(case):
    """`forward_with_similarity` embeds through timm's private `_pos_embed` (ViT, EVA): what it gives the
    blocks must be what the model's own `forward_features` gives them, in every timm version it runs on."""
    model = sar.attach(build(case))
    x, seen = images(), {}
    hook = model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("tokens", args[0]))
    model.forward_features(x)
    hook.remove()
    torch.testing.assert_close(model._sar_family.stem(model, x)[0], seen["tokens"], rtol=0, atol=0)


@pytest.mark.parametrize("case", ["vit", "eva02", "beit"])
def test_whole_attached_model_saves_and_loads(case, tmp_path):
    """`torch.save(model)` pickles the model itself, whose class `attach` made at run time."""
    model = sar.attach(build(case), last_block="no_msa_skip")
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert type(loaded) is type(model) and loaded.last_block == "no_msa_skip"
    x = images()
    for got, expected in zip(
        loaded.forward_with_similarity(x), model.forward_with_similarity(x), strict=True
    ):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_timm_without_the_embedding_step_is_refused(monkeypatch):
    """`attach` needs timm's `_pos_embed` (private): a timm without it is refused, naming the version."""
    model = build("vit")
    monkeypatch.delattr(timm.models.vision_transformer.VisionTransformer, "_pos_embed")
    with pytest.raises(ValueError, match=rf"has no _pos_embed in timm {timm.__version__}"):
        sar.attach(model)
