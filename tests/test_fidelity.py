"""Each method's structure against the facts of its official code, written from those facts (layer lists,
token sets, initialisation, augmentation radii, precision), not from our code: MoCo-v3's projector and
predictor (facebookresearch/moco-v3 `moco/builder.py`), DINO's head, [CLS] initialisation and blur
(facebookresearch/dino `vision_transformer.py`, `main_dino.py`, `utils.py`), and the precision each
protocol resolves to. PVT's stage-4 token set is in test_models_intermediates.py, mmseg's treatment of
out-of-range labels in test_segmentation.py.

An earlier test of MoCo-v3 checked only behaviour (the momentum update, which parameters get gradients),
which a predictor without its last BatchNorm passes as well; these compare the modules themselves."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

import sar  # noqa: F401  (registers the models)
from harness import distributed
from harness.config import RECIPES_DIR
from harness.core.data import train_loader
from harness.recipe import load_recipe
from harness.ssl import augment, dino, mocov3

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 0}


def layers(module: nn.Module) -> list[tuple]:
    """A Sequential as (kind, in, out, bias or affine) per layer."""
    out = []
    for m in module:
        if isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            out.append(("BN", m.num_features, m.num_features, m.affine))
        else:
            out.append((type(m).__name__,))
    return out


def test_mocov3_vit_projector_and_predictor_are_moco_vits():
    """`MoCo_ViT._build_projector_and_predictor_mlps`: projector `_build_mlp(3, hidden_dim, mlp_dim, dim)`
    and predictor `_build_mlp(2, dim, mlp_dim, dim)`, both with the default `last_bn=True`: Linear without
    bias, then BN + ReLU between layers and BatchNorm1d(affine=False) after the last Linear."""
    backbone = timm.create_model("sar_vit_tiny_patch16_224", last_block="sar", **TINY)
    moco = mocov3.MoCo(backbone, mlp_dim=32, dim=8, temperature=0.2)
    assert layers(moco.projector) == [
        ("Linear", 48, 32, False),
        ("BN", 32, 32, True),
        ("ReLU",),
        ("Linear", 32, 32, False),
        ("BN", 32, 32, True),
        ("ReLU",),
        ("Linear", 32, 8, False),
        ("BN", 8, 8, False),
    ]
    assert layers(moco.predictor) == [
        ("Linear", 8, 32, False),
        ("BN", 32, 32, True),
        ("ReLU",),
        ("Linear", 32, 8, False),
        ("BN", 8, 8, False),
    ]
    assert layers(moco.momentum_projector) == layers(moco.projector)


def test_dino_head_is_dinohead():
    """`DINOHead(in_dim, out_dim, use_bn=False, norm_last_layer, nlayers=3, hidden_dim=2048,
    bottleneck_dim=256)`: Linear, GELU, Linear, GELU, Linear to the bottleneck, L2 normalisation, then a
    weight-normalised Linear without bias whose g is filled with 1."""
    head = dino.Head(48, 16, 32, 8, norm_last_layer=True)
    assert layers(head.mlp) == [
        ("Linear", 48, 32, True),
        ("GELU",),
        ("Linear", 32, 32, True),
        ("GELU",),
        ("Linear", 32, 8, True),
    ]
    last = head.last_layer
    assert (last.in_features, last.out_features, last.bias) == (8, 16, None)
    g = last.parametrizations.weight.original0
    assert torch.equal(g, torch.ones_like(g)) and not g.requires_grad
    assert dino.Head(
        48, 16, 32, 8, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad


def test_dino_head_and_loss_stay_float32_under_autocast():
    """The head's outputs are divided by temperatures down to 0.04: both run in float32 whatever the mode."""
    torch.manual_seed(0)
    head, loss = dino.Head(48, 16, 32, 8, norm_last_layer=False), dino.Loss(16, 4, 0.1, 0.9)
    x = torch.randn(8, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(x)
        value = loss(out, out[:4], 0.04)
    assert out.dtype == torch.float32 and value.dtype == torch.float32
    torch.testing.assert_close(out, head(x))


def test_dino_initialises_cls_as_dinos_vit():
    """DINO's `VisionTransformer`: trunc_normal_(cls_token, std=.02), where timm's ViT draws N(0, 1e-6)."""
    torch.manual_seed(0)
    model = timm.create_model("sar_vit_tiny_patch16_224", last_block="sar", **{**TINY, "embed_dim": 384})
    assert float(model.cls_token.detach().std()) < 1e-5  # timm's
    assert 0.015 < float(dino.prepare_backbone(model).cls_token.detach().std()) < 0.025


def _blur_radii(transform) -> list[tuple[float, float]]:
    return [t.radius for t in transform.transforms if isinstance(t, augment.Blur)]


def test_every_crop_draws_its_blur_radius_from_the_protocols_range():
    """DINO's `utils.GaussianBlur` and MoCo-v3's `GaussianBlur([.1, 2.])` draw a PIL radius in 0.1-2.0 px
    for every crop, 96-px local crops included."""
    crops = augment.MultiCrop(224, (0.25, 1.0), 96, (0.05, 0.25), 2, (0.1, 2.0))
    assert [_blur_radii(t) for t in (crops.global1, crops.global2, crops.local)] == [[(0.1, 2.0)]] * 3
    views = augment.TwoViews(224, 0.08, (0.1, 2.0))
    assert [_blur_radii(t) for t in (views.first, views.second)] == [[(0.1, 2.0)]] * 2
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert [tuple(c.shape) for c in crops(image)] == [(3, 224, 224)] * 2 + [(3, 96, 96)] * 2


@pytest.fixture(scope="module")
def resolved():
    """The protocol of every kind of run, at paper and local scale, as the recipes resolve them."""
    out = {}
    for scale in ("paper", "local"):
        for recipe, row in [
            ("table2", "vit-s"),
            ("table1", "1b/A"),
            ("table4", "c10-base"),
            ("table9_pretraining", "mocov3"),
            ("table9_pretraining", "dino"),
            ("table9", "mocov3"),
            ("table9", "dino"),
            ("table12", "pvt"),
        ]:
            _, runs = load_recipe(RECIPES_DIR / f"{recipe}.yaml", [f"scale={scale}"])
            run = next(r for r in runs if row in r.rows)
            out[scale, recipe, row] = run.config
    return out


@pytest.mark.slow
def test_each_protocol_resolves_to_its_codes_precision(resolved):
    """fp16 with a loss scaler for the supervised codes (DeiT's engine.py and SAR's main.py, Swin's O1),
    T2T's --amp, MoCo-v3's main_moco.py; float32 for DINO's released run (use_fp16 False), both linear
    probes and mmseg's Semantic FPN."""
    expected = {
        ("table2", "vit-s"): "fp16",
        ("table1", "1b/A"): "fp16",
        ("table4", "c10-base"): "fp16",
        ("table9_pretraining", "mocov3"): "fp16",
        ("table9_pretraining", "dino"): "off",
        ("table9", "mocov3"): "off",
        ("table9", "dino"): "off",
        ("table12", "pvt"): "off",
    }
    for (scale, recipe, row), cfg in resolved.items():
        assert cfg.protocol.amp == expected[recipe, row], (scale, recipe, row)
        assert "amp" not in cfg.train


@pytest.mark.slow
def test_blur_radii_at_paper_scale_and_shrunk_with_the_image_at_local_scale(resolved):
    for recipe_row, method in [
        (("table9_pretraining", "dino"), "dino"),
        (("table9_pretraining", "mocov3"), "mocov3"),
    ]:
        paper, local = resolved[("paper", *recipe_row)], resolved[("local", *recipe_row)]
        assert list(paper.protocol[method].blur_radius) == [0.1, 2.0]
        shrink = local.data.input_size / paper.data.input_size
        assert list(local.protocol[method].blur_radius) == pytest.approx([0.1 * shrink, 2.0 * shrink])


@pytest.mark.slow
def test_the_segmentation_backbone_leaves_cls_out_of_stage_4(resolved):
    for scale in ("paper", "local"):
        assert resolved[scale, "table12", "pvt"].protocol.segmentation.backbone_cls is False


def test_the_probes_train_on_the_last_partial_batch():
    """eval_linear.py and main_lincls.py build their train loaders without drop_last."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"seed": 0, "data": {"num_workers": 0}, "protocol": {"batch_size": 4, "repeated_aug": False}}
    )
    data = TensorDataset(torch.arange(10))
    world = distributed.World()
    loader, sampler = train_loader(cfg, data, world, drop_last=False)
    sampler.set_epoch(0)
    seen = sorted(int(i) for batch in loader for i in batch[0])
    assert len(loader) == 3 and seen == list(range(10))
    assert len(train_loader(cfg, data, world)[0]) == 2  # pre-training drops it, as every SSL code does
