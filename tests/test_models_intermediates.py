"""timm's model contract on the SAR-ready models: `forward_intermediates` (block outputs for the plain
models, stage maps for the pyramids) against a manual block-by-block forward and `forward_features`,
`get_intermediate_layers` as DINO's linear probe calls it, `prune_intermediate_layers`, grad checkpointing
(same outputs, S and gradients; blocks really recomputed) and `features_only` through timm.create_model."""

import re

import pytest
import timm
import torch
from torch import nn

from sar.models import MODEL_NAMES, SARBlock, local_kwargs
from sar.models.base import PyramidModel

PLAIN = [name for name in MODEL_NAMES if not name.startswith(("sar_pvt", "sar_cvt"))]
PYRAMIDS = ["sar_pvt_small", "sar_cvt_13"]
MODES = ["standard", "sar"]
SIZES = [(64, 64), (64, 96)]  # the build size and a non-square one


def build(name: str, last_block: str = "sar", **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, num_classes=10, last_block=last_block, **{**local_kwargs(name), **kwargs})


@pytest.fixture(scope="module")
def models():
    return {(name, mode): build(name, mode).eval() for name in MODEL_NAMES for mode in MODES}


def images(size=(64, 64), batch=2, seed=0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def to_map(tokens: torch.Tensor, grid) -> torch.Tensor:
    """The last h*w tokens `[B, N, C]` as `[B, C, h, w]`, raster order."""
    h, w = grid
    return tokens[:, -h * w :].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def plain_block_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output `[B, 1 + h*w, C]`, run by hand from the first block's input (captured)."""
    seen = {}
    handle = model.blocks[0].register_forward_pre_hook(lambda mod, args: seen.update(x=args[0]))
    model.forward_features(x)
    handle.remove()
    t, grid, outputs = seen["x"], model.feature_grid_for(x.shape[-2:]), []
    for block in model.blocks:
        t = block(t, grid) if isinstance(block, SARBlock) else block(t)
        outputs.append(t)
    return outputs


def pyramid_stage_outputs(model, x: torch.Tensor, dense: bool = False) -> list[tuple[torch.Tensor, tuple]]:
    """Each stage's output tokens and grid, run by hand block by block: the last stage with [CLS] as the
    classifier runs it, or for `dense` as the model's maps take it (PVT's segmentation backbone: the patch
    tokens alone, the position embedding's [CLS] entry left out, unless `dense_cls`)."""
    t, outputs = x, []
    for i, (embed, blocks) in enumerate(zip(model.stage_embeds(), model.stages, strict=True)):
        t, grid = embed(t)
        with_cls = i == model.cls_stage and (model.dense_cls or not dense)
        if with_cls:
            t = torch.cat([model.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        pos = model.stage_position(i, grid)
        if pos is not None and i == model.cls_stage and not with_cls:
            pos = pos[:, 1:]
        t = t if pos is None else t + pos
        for block in blocks:
            t = block(t, grid)
        outputs.append((t, grid))
        t = to_map(t, grid)
    return outputs


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
@torch.no_grad()
def test_intermediates_equal_a_manual_forward_and_end_in_forward_features(models, name, mode, size):
    model, x = models[name, mode], images(size)
    tokens = model.forward_features(x)
    grid = model.feature_grid_for(size)
    final, maps = model.forward_intermediates(x)
    normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
    assert torch.equal(final, tokens)  # the SAR last block ran intact, with its grid
    if isinstance(model, PyramidModel):
        manual = pyramid_stage_outputs(model, x, dense=True)
        assert len(maps) == len(model.stages)
        for fmap, (t, stage_grid) in zip(maps, manual, strict=True):
            torch.testing.assert_close(fmap, to_map(t, stage_grid))
        torch.testing.assert_close(normed[-1], to_map(model.norm(manual[-1][0]), grid))
        torch.testing.assert_close(normed[:-1], maps[:-1])  # no norm before the [CLS] stage
        return
    assert torch.equal(normed[-1], model.patch_grid(tokens, grid))
    manual = plain_block_outputs(model, x)
    nlc = model.forward_intermediates(x, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
    assert len(maps) == len(nlc) == len(model.blocks)
    for fmap, fnorm, (patches, prefix), t in zip(maps, normed, nlc, manual, strict=True):
        torch.testing.assert_close(fmap, to_map(t, grid))
        torch.testing.assert_close(fnorm, to_map(model.norm(t), grid))
        torch.testing.assert_close(torch.cat([prefix, patches], dim=1), t)


@pytest.mark.parametrize("name", MODEL_NAMES)
@torch.no_grad()
def test_indices_formats_and_stopping_early(models, name):
    model, x = models[name, "sar"], images((64, 96))
    pyramid = isinstance(model, PyramidModel)
    count = len(model.stages) if pyramid else len(model.blocks)
    everything = model.forward_intermediates(x, intermediates_only=True)
    for indices, expected in [(2, [count - 2, count - 1]), ([0, -1], [0, count - 1]), ((-2,), [count - 2])]:
        taken = model.forward_intermediates(x, indices=indices, intermediates_only=True)
        assert len(taken) == len(expected)
        for got, i in zip(taken, expected, strict=True):
            assert torch.equal(got, everything[i])
        _, early = model.forward_intermediates(x, indices=indices, stop_early=True)
        for got, i in zip(early, expected, strict=True):
            assert torch.equal(got, everything[i])
    for i, fmap in enumerate(everything):
        channels = model.feature_info[i]["num_chs"]
        reduction = model.feature_info[i]["reduction"]
        assert fmap.shape == (2, channels, 64 // reduction, 96 // reduction)
    for bad in (0, count + 1, [count], [-count - 1], []):
        with pytest.raises(
            ValueError, match=rf"{name} has {count} .*indices {re.escape(repr(bad))} do not fit"
        ):
            model.forward_intermediates(x, indices=bad)
    if pyramid:
        with pytest.raises(ValueError, match=rf"{name}: output_fmt must be one of \('NCHW',\)"):
            model.forward_intermediates(x, output_fmt="NLC")
        return
    nlc = model.forward_intermediates(x, output_fmt="NLC", intermediates_only=True)
    assert nlc[0].shape == (2, 8 * 12, model.embed_dim)
    torch.testing.assert_close(everything[0][:, :, 1, 2], nlc[0][:, 1 * 12 + 2])  # row 1, column 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", PLAIN)
@torch.no_grad()
def test_get_intermediate_layers_as_dinos_linear_probe_calls_it(models, name, mode):
    model, x = models[name, mode], images()
    out = model.get_intermediate_layers(x, n=4, return_prefix_tokens=True, norm=True)
    manual = plain_block_outputs(model, x)[-4:]
    assert len(out) == 4
    for (patches, prefix), t in zip(out, manual, strict=True):
        assert patches.shape == (2, 64, model.embed_dim) and prefix.shape == (2, 1, model.embed_dim)
        torch.testing.assert_close(prefix[:, 0], model.norm(t)[:, 0])
    features = torch.cat([prefix[:, 0] for _, prefix in out], dim=-1)  # the probe's input
    assert features.shape == (2, 4 * model.embed_dim)
    assert torch.equal(out[-1][1][:, 0], model.forward_features(x)[:, 0])
    maps = model.get_intermediate_layers(x, n=[1], reshape=True)
    torch.testing.assert_close(maps[0], to_map(manual[1], (8, 8)))
    with pytest.raises(ValueError, match=rf"{name} has 4 blocks: indices 5 do not fit"):
        model.get_intermediate_layers(x, n=5)


@pytest.mark.parametrize("name", MODEL_NAMES)
@torch.no_grad()
def test_prune_intermediate_layers_keeps_the_taken_outputs(models, name):
    full, x = models[name, "sar"], images()
    pruned = build(name).eval()
    kept = pruned.prune_intermediate_layers([0, 1])
    assert kept == [0, 1] and pruned.num_classes == 0
    expected = full.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
    torch.testing.assert_close(
        pruned.forward_intermediates(x, indices=[0, 1], intermediates_only=True), expected
    )
    if isinstance(pruned, PyramidModel):  # the [CLS] stage is gone: [CLS] and the classifier with it
        assert len(pruned.stages) == 2 and pruned.cls_token is None
        assert not any(key.startswith(("cls_token", "norm.", "head.")) for key in pruned.state_dict())
        with pytest.raises(ValueError, match=rf"{name}: prune_intermediate_layers kept only 2 stages"):
            pruned.forward_features(x)
    else:
        assert len(pruned.blocks) == 2
        with pytest.raises(ValueError, match=rf"{name}: no S, prune_intermediate_layers removed"):
            pruned.forward_with_similarity(x)
    whole = build(name).eval()
    assert whole.prune_intermediate_layers(1, prune_norm=True) == [len(whole.feature_info) - 1]
    _, maps = whole.forward_intermediates(x, indices=1)
    torch.testing.assert_close(maps, full.forward_intermediates(x, indices=1, intermediates_only=True))


def count_block_calls(model) -> dict[str, int]:
    """How often each block's forward starts (a recomputation in backward starts it again)."""
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if isinstance(module, SARBlock) or type(module).__name__ == "Block":
            module.register_forward_pre_hook(
                lambda mod, args, name=name: calls.update({name: calls.get(name, 0) + 1})
            )
    return calls


def step(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A training step's outputs and gradients, with S in the loss; the same random draws every time."""
    model.zero_grad()
    torch.manual_seed(1)
    logits, S = model.forward_with_similarity(x)
    weights = torch.linspace(-1, 1, S.numel()).reshape(S.shape)
    (logits.square().mean() + (S * weights).sum()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), S.detach(), grads


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_grad_checkpointing_recomputes_blocks_with_equal_outputs_and_gradients(name, mode):
    model = build(name, mode, drop_path_rate=0.2).train()  # drop path: recomputing must draw the same masks
    x = images((64, 96))
    calls = count_block_calls(model)
    logits, S, grads = step(model, x)
    assert set(calls.values()) == {1}
    calls.clear()
    model.set_grad_checkpointing()
    ck_logits, ck_S, ck_grads = step(model, x)
    assert set(calls.values()) == {2}, "every block, the last one included, is recomputed in backward"
    torch.testing.assert_close(ck_logits, logits, rtol=0, atol=0)
    torch.testing.assert_close(ck_S, S, rtol=0, atol=0)
    assert ck_grads.keys() == grads.keys() == {n for n, p in model.named_parameters() if p.requires_grad}
    for key, grad in grads.items():
        torch.testing.assert_close(ck_grads[key], grad, rtol=1e-5, atol=1e-7, msg=key)
    with torch.no_grad():
        model.eval()
        final, maps = model.forward_intermediates(x)
        model.set_grad_checkpointing(False)
        assert torch.equal(final, model.forward_features(x))
        torch.testing.assert_close(maps, model.forward_intermediates(x, intermediates_only=True))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_only_through_timm_create_model(models, name):
    full, x = models[name, "sar"], images((64, 96))
    features = timm.create_model(name, features_only=True, **local_kwargs(name)).eval()
    n = len(full.stages) if name in PYRAMIDS else 3  # timm's defaults: every stage; a ViT's last 3 blocks
    assert features.feature_info.channels() == [info["num_chs"] for info in full.feature_info[-n:]]
    assert features.feature_info.reduction() == [info["reduction"] for info in full.feature_info[-n:]]
    assert "num_classes" not in features.pretrained_cfg
    # a checkpoint of the classifier loads strictly, apart from the classifier and the final norm
    state = full.state_dict()
    missing = set(state) - set(features.model.state_dict())
    assert missing == {"head.weight", "head.bias", "norm.weight", "norm.bias"}
    features.model.load_state_dict({k: v for k, v in state.items() if k not in missing}, strict=True)
    with torch.no_grad():
        maps = features(x)
        expected = full.forward_intermediates(x, indices=n, intermediates_only=True)
    assert len(maps) == n
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)


@pytest.mark.slow
@torch.no_grad()
def test_pvt_small_features_are_the_segmentation_backbones():
    features = timm.create_model("sar_pvt_small", features_only=True, out_indices=(0, 1, 2, 3)).eval()
    assert features.feature_info.channels() == [64, 128, 320, 512]
    assert features.feature_info.reduction() == [4, 8, 16, 32]
    last = features.model.stages[3][-1]
    assert last.mode == "sar" and isinstance(last.norm2, torch.nn.Identity)  # the SAR block, intact
    maps = features(images((64, 96), batch=1))
    assert [tuple(m.shape) for m in maps] == [
        (1, 64, 16, 24),
        (1, 128, 8, 12),
        (1, 320, 4, 6),
        (1, 512, 2, 3),
    ]
    cvt = timm.create_model("sar_cvt_13", features_only=True).eval()
    assert cvt.feature_info.channels() == [64, 192, 384] and cvt.feature_info.reduction() == [4, 8, 16]


def stage_token_counts(model, run) -> list[int]:
    """How many tokens the [CLS] stage's first block receives, per call, while `run()` runs."""
    counts: list[int] = []
    block = model.stages[model.cls_stage][0]
    handle = block.register_forward_pre_hook(lambda mod, args: counts.append(args[0].shape[1]))
    run()
    handle.remove()
    return counts


@pytest.mark.slow
@torch.no_grad()
def test_pvt_stage4_maps_are_the_official_segmentation_backbones_token_set(models):
    """whai362/PVT `segmentation/pvt.py` (v1): stage 4 runs on its h*w patch tokens alone, with
    `pos_embed4[:, 1:]`; the classifier's pass keeps [CLS] (1 + h*w tokens). `dense_cls=True` keeps it."""
    model, x = models["sar_pvt_small", "sar"], images((64, 96))
    assert not model.dense_cls
    h, w = model.feature_grid_for((64, 96))
    assert stage_token_counts(model, lambda: model.forward_intermediates(x, intermediates_only=True)) == [
        h * w
    ]
    assert stage_token_counts(model, lambda: model.forward_features(x)) == [1 + h * w]
    # the final tokens come from the classifier's pass, the map from the backbone's
    assert stage_token_counts(model, lambda: model.forward_intermediates(x)) == [h * w, 1 + h * w]
    official = model.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
    stages = pyramid_stage_outputs(model, x, dense=True)
    torch.testing.assert_close(official, to_map(stages[-1][0], (h, w)))
    with_cls = build("sar_pvt_small", dense_cls=True).eval()
    assert stage_token_counts(
        with_cls, lambda: with_cls.forward_intermediates(x, intermediates_only=True)
    ) == [1 + h * w]
    classifier_map = with_cls.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
    torch.testing.assert_close(classifier_map, to_map(pyramid_stage_outputs(with_cls, x)[-1][0], (h, w)))
    assert not torch.allclose(official, classifier_map)  # the same weights: [CLS] changes the map
    with pytest.raises(ValueError, match=r"CvT's last stage projects \[CLS\] apart"):
        build("sar_cvt_13", dense_cls=False)


@pytest.mark.parametrize(
    ("out_indices", "kept", "dropped"),
    [
        (2, [2, 3], ()),
        (
            (0, 1),
            [0, 1],
            (
                "cls_token",
                "pos_embeds.2",
                "pos_embeds.3",
                "patch_embeds.2.",
                "patch_embeds.3.",
                "stages.2.",
                "stages.3.",
            ),
        ),
    ],
)
@torch.no_grad()
def test_pvt_features_only_lack_the_classifier_and_what_follows_the_last_map(
    models, out_indices, kept, dropped
):
    name = "sar_pvt_small"
    full, x = models[name, "sar"], images()
    features = timm.create_model(
        name, features_only=True, out_indices=out_indices, **local_kwargs(name)
    ).eval()
    assert list(features.feature_info.out_indices) == kept
    state = full.state_dict()
    lacking = set(state) - set(features.model.state_dict())
    assert lacking == {k for k in state if k.startswith(("head.", "norm.", *dropped))}
    features.model.load_state_dict({k: v for k, v in state.items() if k not in lacking}, strict=True)
    expected = full.forward_intermediates(x, indices=kept, intermediates_only=True)
    torch.testing.assert_close(features(x), expected, rtol=0, atol=0)


@torch.no_grad()
def test_what_the_models_take_from_timm_is_what_timm_does_for_its_own_vit():
    """The one private timm name the models use (`FeatureGetterNet`, in `with_features`) and what they
    write after timm (the indices of `forward_intermediates`, a feature net's config), against timm's own
    ViT through its public API: a timm upgrade that moves or changes them fails here."""
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 16, "depth": 4, "num_heads": 2}
    theirs = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()
    ours = timm.create_model("sar_vit_tiny_patch16_224", **kwargs).eval()
    x = images((32, 32))

    def blocks_taken(model: nn.Module, indices) -> list[int]:
        everything = model.forward_intermediates(x, intermediates_only=True)
        taken = model.forward_intermediates(x, indices=indices, intermediates_only=True)
        return [next(i for i, a in enumerate(everything) if torch.equal(a, t)) for t in taken]

    for indices in (None, 1, 3, [0, -1], (-3, 1), [2]):
        assert blocks_taken(ours, indices) == blocks_taken(theirs, indices), indices
    their_net = timm.create_model("vit_tiny_patch16_224", features_only=True, feature_cls="getter", **kwargs)
    our_net = timm.create_model("sar_vit_tiny_patch16_224", features_only=True, **kwargs)
    assert type(our_net) is type(their_net)
    dropped = set(theirs.pretrained_cfg) - set(their_net.pretrained_cfg)
    ours_dropped = set(ours.pretrained_cfg) - set(our_net.pretrained_cfg)
    assert dropped and ours_dropped == dropped & set(ours.pretrained_cfg)
