"""The SAR-ready models: S against explicit attention logits, the last-block variants, equality with timm,
parameter counts and MACs, and training steps at small sizes."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import sar
from sar.models import LAST_BLOCKS, MODEL_NAMES, SARBlock, local_kwargs
from sar.models.cvt import ConvAttention
from sar.models.layers import ClsAttention
from sar.models.pvt import SRAttention

# published: parameters (M) and GMACs at 224 with 1000 classes (DeiT, T2T-ViT_t-14, PVT v1, CvT papers)
PUBLISHED = {
    "sar_vit_tiny_patch16_224": (5.7, 1.3),
    "sar_vit_small_patch16_224": (22.1, 4.6),
    "sar_t2t_vit_14": (21.5, 6.1),
    "sar_pvt_small": (24.5, 3.8),
    "sar_cvt_13": (20.0, 4.5),
}


def small(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, **{**local_kwargs(name), **kwargs})


def last_attention_input(model, x):
    """The input of the last block's attention (after norm1), captured with a hook."""
    seen = {}
    attn = last_block(model).attn
    handle = attn.register_forward_pre_hook(lambda mod, args: seen.update(x=args[0], grid=args[1]))
    model(x)
    handle.remove()
    return seen["x"], seen["grid"]


def last_block(model) -> SARBlock:
    blocks = model.blocks if hasattr(model, "blocks") else model.stages[-1]
    return blocks[-1]


def explicit_q_k(attn, x: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """q and k `[B, H, N, d]` and the key grid, from the weights, written out independently of the model."""
    b, _, c = x.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], attn.num_heads, -1).transpose(1, 2)

    if isinstance(attn, ClsAttention):
        q, k, _ = F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)
        return split(q), split(k), grid
    if isinstance(attn, SRAttention):
        assert attn.sr_ratio == 1
        k, _ = F.linear(x, attn.kv.weight, attn.kv.bias).chunk(2, dim=-1)
        return split(F.linear(x, attn.q.weight, attn.q.bias)), split(k), grid
    assert isinstance(attn, ConvAttention)
    cls, patches = x[:, :1], x[:, 1:].transpose(1, 2).reshape(b, c, *grid)

    def conv_bn(proj, linear, stride):
        y = F.conv2d(patches, proj.conv.weight, stride=stride, padding=1, groups=c)
        bn = proj.bn
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        tokens = torch.cat([cls, y.flatten(2).transpose(1, 2)], dim=1)
        return split(F.linear(tokens, linear.weight, linear.bias)), (y.shape[2], y.shape[3])

    q, _ = conv_bn(attn.conv_proj_q, attn.proj_q, 1)
    k, kv_grid = conv_bn(attn.conv_proj_k, attn.proj_k, 2)
    return q, k, kv_grid


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_similarity_is_the_cls_row_of_the_attention_logits(name):
    model = small(name).eval()
    x = torch.randn(2, 3, 64, 64)
    inp, grid = last_attention_input(model, x)
    q, k, kv_grid = explicit_q_k(last_block(model).attn, inp, grid)
    scale = 1 / math.sqrt(model.embed_dim) if name == "sar_cvt_13" else 1 / math.sqrt(q.shape[-1])
    logits = (q @ k.transpose(-2, -1)) * scale  # the full attention logits, materialised here only
    n = kv_grid[0] * kv_grid[1]
    expected = logits[:, :, 0, -n:].reshape(2, -1, *kv_grid)
    _, S = model.forward_with_similarity(x)
    assert S.shape == (2, q.shape[1], *model.similarity_grid) and S.dtype == torch.float32
    torch.testing.assert_close(S, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cosine_similarity_of_eq_15_leaves_the_attention_alone(name):
    model = small(name).eval()
    x = torch.randn(2, 3, 64, 64)
    logits_dot = model(x)
    model.set_similarity("cosine")
    inp, grid = last_attention_input(model, x)
    q, k, kv_grid = explicit_q_k(last_block(model).attn, inp, grid)
    n = kv_grid[0] * kv_grid[1]
    qn, kn = F.normalize(q[:, :, :1], dim=-1), F.normalize(k[:, :, -n:], dim=-1)
    expected = (qn @ kn.transpose(-2, -1)).reshape(2, -1, *kv_grid)  # <q, k> / (|q| |k|), no scale
    logits, S = model.forward_with_similarity(x)
    torch.testing.assert_close(S, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, logits_dot)  # the classifier's attention is unchanged
    with pytest.raises(ValueError, match="similarity must be one of"):
        model.set_similarity("l2")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fused_attention_everywhere_and_no_attention_matrix(name):
    model = small(name).eval()
    ops: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            ops.append(func.__name__)
            return func(*args, **(kwargs or {}))

    with Record():
        model.forward_with_similarity(torch.randn(2, 3, 64, 64))
    n_attention = sum(
        1
        for m in model.modules()
        if type(m).__name__ in ("Attention", "ClsAttention", "TokenAttention", "SRAttention", "ConvAttention")
    )
    assert sum("scaled_dot_product" in op for op in ops) == n_attention
    assert not any("softmax" in op for op in ops)


@pytest.mark.parametrize("mode", LAST_BLOCKS)
def test_block_modes_follow_table_1b(mode):
    torch.manual_seed(0)
    block = SARBlock.build(16, ClsAttention(16, 2), 2.0, torch.nn.LayerNorm, mode=mode).eval()
    x = torch.randn(2, 1 + 9, 16)
    a = block.attn(block.norm1(x), (3, 3))
    expected = {
        "standard": lambda: (x + a) + block.mlp(block.norm2(x + a)),
        "no_msa_skip": lambda: a + block.mlp(block.norm2(a)),
        "sar": lambda: a + block.mlp(a),
        "no_skips": lambda: block.mlp(a),
    }[mode]()
    torch.testing.assert_close(block(x, (3, 3)), expected)
    assert isinstance(block.norm2, torch.nn.Identity) == (mode in ("sar", "no_skips"))


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("mode", LAST_BLOCKS)
def test_only_the_standard_block_keeps_an_identity_path(name, mode):
    model = small(name, last_block=mode).eval()
    block = last_block(model)
    with torch.no_grad():  # silence the attention branch: what is left of the input is the identity path
        block.attn.proj.weight.zero_()
        block.attn.proj.bias.zero_()
    x1, grid = last_attention_input(model, torch.randn(2, 3, 64, 64))
    tokens = x1.shape[1]
    out1 = block(torch.randn(2, tokens, x1.shape[-1]), grid)
    out2 = block(torch.randn(2, tokens, x1.shape[-1]), grid)
    assert torch.allclose(out1, out2) == (mode != "standard")


@pytest.mark.slow
@pytest.mark.parametrize("timm_name", ["vit_tiny_patch16_224", "vit_small_patch16_224"])
def test_standard_vit_equals_timm(timm_name):
    torch.manual_seed(0)
    reference = timm.create_model(timm_name, num_classes=10).eval()
    ours = timm.create_model(f"sar_{timm_name}", num_classes=10, last_block="standard").eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    logits, _ = ours.forward_with_similarity(x)
    torch.testing.assert_close(logits, reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.forward_features(x), reference.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_count_and_macs_match_the_published_figures(name, capsys):
    params_m, gmacs = PUBLISHED[name]
    model = timm.create_model(name, last_block="standard").eval()
    count = sum(p.numel() for p in model.parameters()) / 1e6
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 224, 224))  # the math backend exposes the attention matmuls to the counter
    macs = counter.get_total_flops() / 2e9
    sar_count = sum(p.numel() for p in timm.create_model(name).parameters()) / 1e6
    with capsys.disabled():
        print(
            f"\n  {name}: {count:.2f}M params ({sar_count:.2f}M with the SAR block; published {params_m}M),"
            f" {macs:.2f} GMACs (published {gmacs})"
        )
    assert abs(count - params_m) / params_m < 0.03
    assert abs(macs - gmacs) / gmacs < 0.05


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_step_at_small_size(name):
    model = small(name, drop_path_rate=0.1).train()
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    logits, S = model.forward_with_similarity(x)
    assert logits.shape == (4, 10) and S.shape[2:] == model.similarity_grid
    loss = F.cross_entropy(logits, y) + 0.01 * sar.spatial_entropy(S)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_heads_and_classes(name):
    model = small(name).eval()
    x = torch.randn(2, 3, 64, 64)
    tokens = model.forward_features(x)
    h, w = model.feature_grid
    assert tokens.shape == (2, 1 + h * w, model.embed_dim)
    assert model.patch_grid(tokens).shape == (2, model.embed_dim, h, w)
    torch.testing.assert_close(model.forward_head(tokens), model(x))
    assert model.forward_head(tokens, pre_logits=True).shape == (2, model.embed_dim)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7) and model.get_classifier().out_features == 7
    assert timm.create_model(name, num_classes=3, **local_kwargs(name))(x).shape == (2, 3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bf16_autocast_keeps_s_in_float32(name):
    model = small(name).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, S = model.forward_with_similarity(torch.randn(2, 3, 64, 64))
        loss = sar.spatial_entropy(S)
    assert S.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.slow
def test_compiled_forward_matches_eager():
    model = small("sar_vit_tiny_patch16_224").eval()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model.forward_with_similarity, fullgraph=True)
    logits, S = compiled(x)
    ref_logits, ref_S = model.forward_with_similarity(x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(S, ref_S, rtol=1e-4, atol=1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="last_block must be one of"):
        timm.create_model("sar_vit_tiny_patch16_224", last_block="no_ln")
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("sar_pvt_small", pretrained=True)
    with pytest.raises(ValueError, match="class_token"):
        timm.create_model("sar_vit_tiny_patch16_224", class_token=False)
    with pytest.raises(
        ValueError, match=r"sar_cvt_13 \(built for 224x224\) cannot take a 65x65 input.*32 px"
    ):
        timm.create_model("sar_cvt_13")(torch.randn(1, 3, 65, 65))
    with pytest.raises(ValueError, match="differ in length"):
        timm.create_model("sar_pvt_small", depths=(1, 1, 1))
    with pytest.raises(KeyError, match="no local-scale configuration"):
        local_kwargs("resnet50")
