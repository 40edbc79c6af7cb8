"""S at input sizes other than the build size: its grid is the input's own token grid (input / total stride)
and it equals the [CLS] row of the last block's attention logits, computed here independently: each model is
run by hand from its weights (patch embedding, position embedding resized with F.interpolate, blocks, then
q and k of the last block written out), and the full logits q k^T * scale are materialised."""

import pytest
import timm
import torch
import torch.nn.functional as F

import sar
from sar.models import MODEL_NAMES, local_kwargs

# the stride of S's grid for each local member (64-px build): input / stride = S's grid
S_STRIDE = {
    "sar_vit_tiny_patch16_224": 8,
    "sar_vit_small_patch16_224": 8,
    "sar_t2t_vit_14": 8,
    "sar_pvt_small": 8,
    "sar_cvt_13": 8,
}
SIZES = [(64, 64), (96, 96), (128, 128), (64, 96)]  # the build size, larger ones, and one not square


@pytest.fixture(scope="module")
def local_models():
    models = {}
    for name in MODEL_NAMES:
        torch.manual_seed(0)
        models[name] = timm.create_model(name, num_classes=10, **local_kwargs(name)).eval()
    return models


def images(size, batch=2, seed=0):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, H, N, C / H]."""
    return t.reshape(t.shape[0], t.shape[1], num_heads, -1).transpose(1, 2)


def cls_row(q: torch.Tensor, k: torch.Tensor, scale: float, grid) -> torch.Tensor:
    """The [CLS]-query row of the full pre-softmax logits, over the last h*w keys, as [B, H, h, w]."""
    logits = (q @ k.transpose(-2, -1)) * scale  # [B, H, N, N], materialised here only
    n = grid[0] * grid[1]
    assert k.shape[2] == 1 + n, "the keys are [CLS] + the expected grid"
    return logits[:, :, 0, -n:].reshape(q.shape[0], q.shape[1], *grid)


def resized(pos: torch.Tensor, old, new, prefix: int, mode: str, antialias: bool) -> torch.Tensor:
    """A [1, prefix + h*w, C] position table with its grid part resized from `old` to `new`."""
    if tuple(old) == tuple(new):
        return pos
    grid = pos[:, prefix:].reshape(1, *old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new, mode=mode, antialias=antialias, align_corners=False)
    return torch.cat([pos[:, :prefix], grid.flatten(2).transpose(1, 2)], dim=1)


def _through_blocks(model, t: torch.Tensor, grid) -> torch.Tensor:
    """The blocks of a ViT-like model, then S from the last block's q and k (from its qkv weights)."""
    for block in model.blocks[:-1]:
        t = block(t)
    last = model.blocks[-1]
    y = F.layer_norm(t, t.shape[-1:], last.norm1.weight, last.norm1.bias, last.norm1.eps)
    q, k, _ = F.linear(y, last.attn.qkv.weight, last.attn.qkv.bias).chunk(3, dim=-1)
    q, k = heads(q, last.attn.num_heads), heads(k, last.attn.num_heads)
    return cls_row(q, k, q.shape[-1] ** -0.5, grid)


def vit_reference(model, x: torch.Tensor) -> torch.Tensor:
    """ViT: conv patches, position table resized bicubically (antialiased, timm's resample_abs_pos_embed)
    to the input's patch grid, the blocks, then q, k of the last block from its qkv weights."""
    p = model.patch_embed.proj.stride[0]
    grid = (x.shape[2] // p, x.shape[3] // p)
    t = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=p)
    t = torch.cat([model.cls_token.expand(x.shape[0], -1, -1), t.flatten(2).transpose(1, 2)], dim=1)
    build = (model.patch_embed.img_size[0] // p, model.patch_embed.img_size[1] // p)
    t = t + resized(model.pos_embed, build, grid, 1, "bicubic", antialias=True)
    return _through_blocks(model, t, grid)


def t2t_reference(model, x: torch.Tensor) -> torch.Tensor:
    """T2T: the three soft splits (F.unfold) on the input's own grids, the token transformers, the position
    table resized bicubically (the official resize_pos_embed: no antialias), the blocks, q and k."""
    t2t, b = model.tokens_to_token, x.shape[0]
    grid, build, t = tuple(x.shape[2:]), (model.img_size, model.img_size), x
    for i, split in enumerate(t2t.splits):
        k, s, p = split.kernel_size, split.stride, split.padding
        grid = tuple((g + 2 * p - k) // s + 1 for g in grid)
        build = tuple((g + 2 * p - k) // s + 1 for g in build)
        t = F.unfold(t, k, stride=s, padding=p).transpose(1, 2)
        if i < 2:
            t = (t2t.attention1, t2t.attention2)[i](t).transpose(1, 2).reshape(b, -1, *grid)
    t = F.linear(t, t2t.project.weight, t2t.project.bias)
    t = torch.cat([model.cls_token.expand(b, -1, -1), t], dim=1)
    t = t + resized(model.pos_embed, build, grid, 1, "bicubic", antialias=False)
    return _through_blocks(model, t, grid)


def pvt_reference(model, x: torch.Tensor) -> torch.Tensor:
    """PVT: per stage conv patches, the stage's position table resized bilinearly (the official
    _get_pos_embed) to the stage's grid, its blocks; [CLS] in the last stage; then q and k."""
    b, t, stride = x.shape[0], x, 1
    n_stages = len(model.stages)
    for i, (embed, blocks) in enumerate(zip(model.patch_embeds, model.stages, strict=True)):
        patch = embed.proj.stride[0]
        stride *= patch
        t = F.conv2d(t, embed.proj.weight, embed.proj.bias, stride=patch)
        grid = (x.shape[2] // stride, x.shape[3] // stride)
        assert tuple(t.shape[2:]) == grid
        t = embed.norm(t.flatten(2).transpose(1, 2))
        last_stage = i == n_stages - 1
        if last_stage:
            t = torch.cat([model.cls_token.expand(b, -1, -1), t], dim=1)
        build = (model.img_size // stride, model.img_size // stride)
        t = t + resized(model.pos_embeds[i], build, grid, int(last_stage), "bilinear", antialias=False)
        for block in blocks if not last_stage else blocks[:-1]:
            t = block(t, grid)
        if not last_stage:
            t = t.transpose(1, 2).reshape(b, -1, *grid)
    last = model.stages[-1][-1]
    attn, c = last.attn, t.shape[-1]
    y = F.layer_norm(t, (c,), last.norm1.weight, last.norm1.bias, last.norm1.eps)
    q = F.linear(y, attn.q.weight, attn.q.bias)
    k = F.linear(y, attn.kv.weight[:c], attn.kv.bias[:c])  # kv's output: keys first, then values
    q, k = heads(q, attn.num_heads), heads(k, attn.num_heads)
    return cls_row(q, k, (c // attn.num_heads) ** -0.5, grid)


def cvt_reference(model, x: torch.Tensor) -> torch.Tensor:
    """CvT: per stage conv embedding and blocks (no position embedding), [CLS] in the last stage; then the
    last block's q (depthwise conv stride 1 + BN + linear) and k (depthwise conv stride 2 + BN + linear):
    S is on the stride-2 key grid; the logits are scaled by the full width."""
    b, t = x.shape[0], x
    n_stages = len(model.stages)
    for i, (embed, blocks) in enumerate(zip(model.embeds, model.stages, strict=True)):
        conv = embed.proj
        t = F.conv2d(t, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
        grid = tuple(t.shape[2:])
        t = embed.norm(t.flatten(2).transpose(1, 2))
        last_stage = i == n_stages - 1
        if last_stage:
            t = torch.cat([model.cls_token.expand(b, -1, -1), t], dim=1)
        for block in blocks if not last_stage else blocks[:-1]:
            t = block(t, grid)
        if not last_stage:
            t = t.transpose(1, 2).reshape(b, -1, *grid)
    last = model.stages[-1][-1]
    attn, c = last.attn, t.shape[-1]
    y = F.layer_norm(t, (c,), last.norm1.weight, last.norm1.bias, last.norm1.eps)
    cls, fmap = y[:, :1], y[:, 1:].transpose(1, 2).reshape(b, c, *grid)

    def project(proj, linear, stride):
        z = F.conv2d(fmap, proj.conv.weight, stride=stride, padding=1, groups=c)
        bn = proj.bn
        z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        tokens = torch.cat([cls, z.flatten(2).transpose(1, 2)], dim=1)
        return heads(F.linear(tokens, linear.weight, linear.bias), attn.num_heads), tuple(z.shape[2:])

    q, _ = project(attn.conv_proj_q, attn.proj_q, 1)
    k, key_grid = project(attn.conv_proj_k, attn.proj_k, 2)
    return cls_row(q, k, c**-0.5, key_grid)


REFERENCES = {
    "sar_vit_tiny_patch16_224": vit_reference,
    "sar_vit_small_patch16_224": vit_reference,
    "sar_t2t_vit_14": t2t_reference,
    "sar_pvt_small": pvt_reference,
    "sar_cvt_13": cvt_reference,
}


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_s_follows_the_input_grid_and_equals_the_explicit_logits(local_models, name, size):
    model = local_models[name]
    x = images(size)
    grid = (size[0] // S_STRIDE[name], size[1] // S_STRIDE[name])
    with torch.no_grad():
        logits, S = model.forward_with_similarity(x)
        expected = REFERENCES[name](model, x)
        tokens = model.forward_features(x)
    assert S.shape == (2, expected.shape[1], *grid) and S.dtype == torch.float32
    assert model.similarity_grid_for(size) == grid
    torch.testing.assert_close(S, expected, rtol=1e-4, atol=1e-4)
    # the rest of the model follows the same tokens
    h, w = model.feature_grid_for(size)
    assert tokens.shape == (2, 1 + h * w, model.embed_dim)
    assert model.patch_grid(tokens, grid=(h, w)).shape == (2, model.embed_dim, h, w)
    torch.testing.assert_close(model.forward_head(tokens), logits)
    torch.testing.assert_close(model(x), logits)


@pytest.fixture(scope="module")
def vit_s_224():
    torch.manual_seed(0)
    ours = timm.create_model("sar_vit_small_patch16_224", num_classes=10, last_block="standard").eval()
    reference = timm.create_model("vit_small_patch16_224", num_classes=10, dynamic_img_size=True).eval()
    reference.load_state_dict(ours.state_dict())
    return ours, reference


@pytest.mark.parametrize("size", [480, 96])  # the SAR VOC evaluation's 480 px, DINO's 96-px local crops
def test_vit_s_224_at_other_sizes_equals_timm_dynamic_img_size(vit_s_224, size):
    ours, reference = vit_s_224
    x = images((size, size), batch=1)
    with torch.no_grad():
        logits, S = ours.forward_with_similarity(x)
        expected_S = vit_reference(ours, x)
        assert S.shape == (1, 6, size // 16, size // 16)
        torch.testing.assert_close(S, expected_S, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits, reference(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            ours.forward_features(x), reference.forward_features(x), rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_training_step_at_another_size_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10, drop_path_rate=0.1, **local_kwargs(name)).train()
    x, y = images((96, 96)), torch.tensor([1, 2])
    logits, S = model.forward_with_similarity(x)
    assert S.shape[2:] == (12, 12)
    (F.cross_entropy(logits, y) + 0.01 * sar.spatial_entropy(S)).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    for n, p in model.named_parameters():  # the resized position tables still learn
        if "pos_embed" in n:
            assert p.grad.abs().sum() > 0, n


WRONG_SIZES = {  # (size, the multiple the message must name)
    "sar_vit_tiny_patch16_224": ((60, 64), 8),
    "sar_vit_small_patch16_224": ((64, 100), 8),
    "sar_t2t_vit_14": ((100, 100), 8),
    "sar_pvt_small": ((72, 72), 16),  # a multiple of the patch strides, not of the spatial reductions
    "sar_cvt_13": ((66, 66), 8),
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_size_that_cannot_work_is_refused_by_name(local_models, name):
    model = local_models[name]
    (h, w), multiple = WRONG_SIZES[name]
    pattern = rf"{name} \(built for 64x64\) cannot take a {h}x{w} input: .*multiples of {multiple} px"
    for call in (model.forward_with_similarity, model.forward_features, model):
        with pytest.raises(ValueError, match=pattern):
            call(images((h, w), batch=1))
    with pytest.raises(ValueError, match=pattern):
        model.similarity_grid_for((h, w))


def test_fixed_size_vit_and_patch_grid_refuse_other_sizes(local_models):
    name = "sar_vit_tiny_patch16_224"
    fixed = timm.create_model(name, num_classes=10, dynamic_img_size=False, **local_kwargs(name)).eval()
    assert fixed.forward_with_similarity(images((64, 64)))[1].shape[2:] == (8, 8)
    with pytest.raises(ValueError, match=f"{name} takes only its build size 64x64, got a 96x96 input"):
        fixed.forward_with_similarity(images((96, 96)))
    # a build size that is not a multiple of the patch: a fixed-size model, as before
    odd = timm.create_model(name, num_classes=10, **{**local_kwargs(name), "img_size": 60}).eval()
    assert not odd.dynamic_img_size and odd.forward_with_similarity(images((60, 60)))[1].shape[2:] == (7, 7)
    with pytest.raises(ValueError, match="dynamic_img_size needs img_size"):
        timm.create_model(name, dynamic_img_size=True, **{**local_kwargs(name), "img_size": 60})
    model = local_models[name]
    tokens = model.forward_features(images((96, 96)))
    with pytest.raises(ValueError, match="feature_grid_for"):
        model.patch_grid(tokens)
    fmap = model.patch_grid(tokens, grid=model.feature_grid_for((96, 96)))
    torch.testing.assert_close(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 12 + 2])  # raster order, row 1, column 2


@pytest.mark.slow
def test_paper_models_take_their_strides():
    """The registered models at their own build size: the multiples they take and S's grid at 480 px."""
    expected = {  # name: (size multiple, S's grid at 480 px, at 96 px)
        "sar_vit_small_patch16_224": (16, (30, 30), (6, 6)),
        "sar_t2t_vit_14": (16, (30, 30), (6, 6)),
        "sar_pvt_small": (32, (15, 15), (3, 3)),
        "sar_cvt_13": (32, (15, 15), (3, 3)),
    }
    for name, (multiple, at_480, at_96) in expected.items():
        model = timm.create_model(name, depth=2) if "vit" in name else timm.create_model(name)
        assert model.size_multiple == (multiple, multiple), name
        assert model.similarity_grid_for((480, 480)) == at_480, name
        assert model.similarity_grid_for((96, 96)) == at_96, name
        assert model.similarity_grid_for((224, 224)) == model.similarity_grid, name
