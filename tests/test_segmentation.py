"""Tab. 12's segmentation: mIoU against its formula, the training pipeline keeping image and labels
aligned, the Semantic FPN on the PVT's stage maps, the backbone loaded strictly from its upstream, the
engine resuming by iteration to the same numbers, and the recipe's rows and printed gain."""

import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf

import sar  # noqa: F401  (registers the models)
from harness.config import RECIPES_DIR, RecipeError
from harness.core import checkpoint
from harness.core.rng import seeded
from harness.engines import segmentation as engine
from harness.engines import train_run
from harness.eval import intersect_and_union, majority_miou, miou_from_areas
from harness.recipe import load_recipe
from harness.report.aggregate import arithmetic, cells
from harness.results import CHECKPOINT, read_metrics, read_result
from harness.segment import data as seg_data
from harness.segment import transforms
from harness.segment.fpn import SemanticFPN
from harness.segment.model import build_segmenter
from harness.segment.transforms import MEAN, STD, TrainPipeline

TINY_PVT = (
    "{img_size: 32, patch_sizes: [2, 2, 2, 1], embed_dims: [16, 16, 24, 32], num_heads: [1, 1, 1, 2], "
    "depths: [1, 1, 1, 1], sr_ratios: [2, 2, 1, 1]}"
)
UPSTREAM = f"""
defaults:
  - recipe_schema
  - protocol: deit
  - _self_
name: up
title: "Upstream PVT"
reproduces: "nothing: a test recipe"
model: sar_pvt_small
dataset: synthetic
epochs: 1
seeds: [0]
data:
  input_size: 32
  num_workers: 0
  synthetic: {{num_classes: 3, image_size: 32, train_per_class: 16, val_per_class: 2, seed: 1}}
protocol: {{batch_size: 16, warmup_epochs: 0}}
train: {{progress: false}}
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
runs_root: {{runs}}
rows:
  - {{id: pvt, label: PVT, model_kwargs: {TINY_PVT}, last_block: standard}}
  - {{id: pvt-sar, label: PVT + SAR, model_kwargs: {TINY_PVT}, last_block: sar, loss: {{sar: true}}}}
"""
DOWNSTREAM = f"""
defaults:
  - recipe_schema
  - protocol: semantic_fpn
  - _self_
name: seg
title: "Segmentation"
reproduces: "nothing: a test recipe"
engine: segmentation
model: sar_pvt_small
dataset: synthetic
seeds: [0]
metrics: [miou]
data:
  num_workers: 0
  synthetic: {{num_classes: 3, image_size: 32, train_per_class: 4, val_per_class: 2, seed: 2}}
protocol:
  batch_size: 4
  segmentation: {{iterations: 4, eval_every: 2, checkpoint_every: 2, crop_size: 32, img_scale: [128, 32]}}
train: {{progress: false, log_every: 1, tensorboard: false}}
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
runs_root: {{runs}}
rows:
  - {{id: seg, label: seg, from: {{recipe: {{upstream}}, row: pvt}}, model_kwargs: {TINY_PVT}}}
  - {{id: seg-sar, label: seg + SAR, from: {{recipe: {{upstream}}, row: pvt-sar}}, model_kwargs: {TINY_PVT},
     last_block: sar, baseline: seg}}
"""


# ------------------------------------------------------------------------------------------------ mIoU


def test_miou_against_the_formula_on_hand_made_maps():
    ignore = 255
    label = np.array([[0, 0, 1, 1], [0, 0, 1, ignore], [3, 3, 1, ignore]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 2], [3, 0, 1, 0]])
    second_label, second_pred = np.array([[1, ignore]]), np.array([[1, 3]])
    areas = intersect_and_union(torch.tensor(pred), torch.tensor(label), 5) + intersect_and_union(
        torch.tensor(second_pred), torch.tensor(second_label), 5
    )
    # by hand, over the 11 labelled pixels of both images (ignored ones drop out, whatever was predicted):
    # class 0: labelled 4, predicted 4, 3 right -> 3 / (4 + 4 - 3); class 1: labelled 5, predicted 5,
    # 4 right -> 4 / 6; class 2: predicted once, never labelled -> 0; class 3: labelled 2, predicted once,
    # right -> 1 / 2; class 4: neither labelled nor predicted -> left out
    expected_iou = [3 / 5, 4 / 6, 0.0, 1 / 2]
    scores = miou_from_areas(areas)
    assert scores["per_class_iou"][4] is None  # absent from labels and predictions: left out
    assert scores["per_class_iou"][:4] == pytest.approx([100 * v for v in expected_iou])
    assert scores["miou"] == pytest.approx(100 * np.mean(expected_iou))
    assert scores["aacc"] == pytest.approx(100 * 8 / 11)  # 3 + 4 + 0 + 1 right of 11 labelled pixels
    assert areas[:, 4].tolist() == [0, 0, 0, 0]
    # predicting class 1 (5 of the 11 labelled pixels) everywhere: IoU 5/11 for it, 0 for classes 0 and 3
    assert majority_miou(areas) == pytest.approx(100 * (5 / 11) / 3)
    with pytest.raises(ValueError, match="no labelled pixel"):
        miou_from_areas(intersect_and_union(torch.zeros(2, 2), torch.full((2, 2), ignore), 5))


def _mmseg_areas(pred: np.ndarray, label: np.ndarray, classes: int, ignore: int) -> np.ndarray:
    """mmseg v0.13's `intersect_and_union`, from its published steps: drop the ignored pixels, then
    `torch.histc(x, bins=classes, min=0, max=classes - 1)` of the hits, the predictions and the labels
    (histc leaves out every value outside [min, max])."""
    keep = label != ignore
    pred, label = pred[keep], label[keep]

    def histc(values: np.ndarray) -> np.ndarray:
        inside = values[(values >= 0) & (values <= classes - 1)]
        return np.bincount(inside.astype(np.int64), minlength=classes)

    intersect, predicted, labelled = histc(pred[pred == label]), histc(pred), histc(label)
    return np.stack([intersect, predicted + labelled - intersect, predicted, labelled])


def test_labels_outside_the_classes_count_as_mmseg_counts_them():
    """A label in [C, 255) (or negative) is neither ignored nor clamped into the last class: its pixel
    counts in no class's labelled area, while its prediction still counts, as mmseg's histc does."""
    rng = np.random.default_rng(0)
    label = rng.choice([0, 1, 2, 3, 7, 200, 255, -1], size=(6, 9))
    pred = rng.integers(0, 4, size=(6, 9))
    got = intersect_and_union(torch.tensor(pred), torch.tensor(label), 4).numpy()
    np.testing.assert_array_equal(got, _mmseg_areas(pred, label, 4, 255))
    assert got[3].sum() == ((label >= 0) & (label < 4)).sum()  # 7, 200 and -1 are in no class


# -------------------------------------------------------------------------------------------- pipeline


def _coded(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes in blocks, each painted in its own grey: the image says which label it shows."""
    label = np.zeros((height, width), dtype=np.uint8)
    label[: height // 2, width // 2 :] = 1
    label[height // 2 :, : width // 3] = 2
    label[height // 2 :, width // 3 :] = 3
    greys = np.array([20, 90, 160, 230], dtype=np.uint8)
    return np.repeat(greys[label][..., None], 3, axis=2), label


def test_training_pipeline_keeps_image_and_labels_aligned(monkeypatch):
    monkeypatch.setattr(transforms, "photometric_distortion", lambda pixels: pixels)  # geometry only
    image, label = _coded(60, 90)
    pipeline = TrainPipeline((160, 40), (0.5, 2.0), 32, 0.75, 0.5, 255)
    greys = torch.tensor([20.0, 90.0, 160.0, 230.0])
    flips = set()
    for key in range(40):
        with seeded(7, key):
            pixels, labels = pipeline(image, label)
            flips.add(random.random())  # the draws go on from the pipeline's
        assert pixels.shape == (3, 32, 32) and labels.shape == (32, 32)
        grey = pixels[0] * STD[0] + MEAN[0]
        padded = labels == 255  # the padding: 0 after normalisation (mmseg pads the normalised image)
        assert (pixels[:, padded] == 0).all()
        # inside each region (a pixel whose 3x3 neighbours share its label) the grey is the label's
        inner = torch.zeros_like(padded)
        same = labels[1:-1, 1:-1]
        neighbours = [
            labels[1 + dy : 31 + dy, 1 + dx : 31 + dx] == same for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        ]
        inner[1:-1, 1:-1] = torch.stack(neighbours).all(0) & (same != 255)
        assert inner.any()
        assert torch.allclose(grey[inner], greys[labels[inner]], atol=0.5)
    assert len(flips) == 40


def test_a_flipped_sample_is_the_mirror_image_of_the_unflipped_one(monkeypatch):
    monkeypatch.setattr(transforms, "photometric_distortion", lambda pixels: pixels)
    image, label = _coded(32, 48)
    always, never = (TrainPipeline((48, 32), (1.0, 1.0), 32, 1.0, p, 255) for p in (1.0, 0.0))
    with seeded(1, 2):
        flipped = always(image, label)
    with seeded(1, 2):
        plain = never(image, label)
    assert torch.equal(flipped[0], plain[0].flip(-1)) and torch.equal(flipped[1], plain[1].flip(-1))


@pytest.mark.slow
def test_crops_avoid_one_class_covering_the_crop():
    label = np.zeros((32, 64), dtype=np.uint8)
    label[:, 48:] = 1  # a crop shows class 1 on more than a quarter of it for a quarter of the offsets
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    strict, loose = (TrainPipeline((64, 32), (1.0, 1.0), 32, ratio, 0.0, 255) for ratio in (0.75, 1.0))
    mixed = {"strict": 0, "loose": 0}
    for key in range(30):
        for name, pipeline in (("strict", strict), ("loose", loose)):
            with seeded(3, key):
                _, labels = pipeline(image, label)
            counts = torch.bincount(labels.flatten(), minlength=2)
            mixed[name] += int(counts.min() > 0 and counts.max() / counts.sum() < 0.75)
    assert mixed["strict"] >= 25 and mixed["loose"] <= 15


def test_photometric_distortion_stays_in_8_bits_and_changes_colours_only():
    pixels = torch.from_numpy(_coded(16, 16)[0]).permute(2, 0, 1).float()
    pixels[1] = torch.linspace(0, 255, 16)  # colourful, so saturation and hue have something to change
    changed = 0
    for key in range(20):
        with seeded(5, key):
            out = transforms.photometric_distortion(pixels.clone())
        assert out.shape == pixels.shape and out.min() >= 0 and out.max() <= 255
        assert torch.equal(out, out.floor())
        changed += int(not torch.equal(out, pixels))
    assert changed > 10


def test_test_pipeline_aligns_sizes_to_32_and_keeps_the_labels():
    image, label = _coded(50, 75)
    pixels, labels = transforms.TestPipeline((2048, 512), 32)(image, label)
    # keep ratio: 512 / 50 on the short side (the long side fits 2048) -> 512 x 768, both multiples of 32
    assert pixels.shape == (3, 512, 768) and torch.equal(labels, torch.from_numpy(label).long())
    pixels, _ = transforms.TestPipeline((2048, 512), 32)(*_coded(40, 100))  # -> 512 x 1280
    assert pixels.shape[1:] == (512, 1280)
    pixels, _ = transforms.TestPipeline((100, 30), 32)(*_coded(40, 100))  # -> 30 x 75, aligned up to 32 x 96
    assert pixels.shape[1:] == (32, 96)


# -------------------------------------------------------------------------------------------- the model


@pytest.mark.slow
def test_semantic_fpn_on_pvt_small_stage_maps():
    backbone = timm.create_model("sar_pvt_small", features_only=True)
    assert backbone.feature_info.channels() == [64, 128, 320, 512]
    assert backbone.feature_info.reduction() == [4, 8, 16, 32]
    model = SemanticFPN(backbone.model, [64, 128, 320, 512], [4, 8, 16, 32], 150, 256, 128, 0.1).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 96))
    assert logits.shape == (1, 150, 64, 96)
    head_blocks = [
        sum(isinstance(m, torch.nn.BatchNorm2d) for m in h.modules()) for h in model.head.scale_heads
    ]
    assert head_blocks == [1, 1, 2, 3]  # log2(stride / 4) blocks, at least one


def _classifier_weights(last_block: str) -> dict[str, torch.Tensor]:
    kwargs = OmegaConf.to_container(OmegaConf.create(TINY_PVT))
    return timm.create_model("sar_pvt_small", num_classes=3, last_block=last_block, **kwargs).state_dict()


def _cfg(last_block: str, backbone_cls: bool = False):
    segmentation = {"neck_channels": 8, "head_channels": 8, "dropout": 0.1, "backbone_cls": backbone_cls}
    return OmegaConf.create(
        {
            "model": "sar_pvt_small",
            "model_kwargs": OmegaConf.create(TINY_PVT),
            "last_block": last_block,
            "protocol": {"drop_path": 0.1, "segmentation": segmentation},
        }
    )


@pytest.mark.parametrize("backbone_cls", [False, True])
def test_the_backbone_is_the_upstream_classifier_but_its_head_and_final_norm(backbone_cls):
    """PVT's segmentation backbone ignores the classifier's cls_token (backbone_cls false, the protocol's
    default): it is unused and gone, so that DDP sees no parameter without a gradient."""
    weights = _classifier_weights("sar")
    model, unused = build_segmenter(_cfg("sar", backbone_cls), 4, weights, "upstream")
    cls = [] if backbone_cls else ["cls_token"]
    assert unused == [*cls, "head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert model.backbone.dense_cls is backbone_cls
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    backbone = model.backbone.state_dict()
    assert set(backbone) == set(weights) - set(unused)
    assert all(torch.equal(backbone[k], weights[k]) for k in backbone)


def test_a_sar_checkpoint_into_a_standard_last_block_is_refused_by_key():
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"norm2"):
        build_segmenter(_cfg("standard"), 4, _classifier_weights("sar"), "upstream")


# ------------------------------------------------------------------------------------------ the engine


@pytest.fixture(scope="module")
def upstream(tmp_path_factory) -> Path:
    """The upstream recipe, its standard row trained for one epoch, once for the module (the tests
    resolve the SAR row without training it)."""
    folder = tmp_path_factory.mktemp("upstream")
    path = folder / "up.yaml"
    path.write_text(UPSTREAM.replace("{runs}", str(folder / "runs")))
    _, runs = load_recipe(path)
    (standard,) = [run for run in runs if run.rows == ["pvt"]]
    train_run(OmegaConf.to_container(standard.config), standard.uid)
    return path


def _downstream(folder: Path, upstream: Path) -> Path:
    path = folder / "seg.yaml"
    path.write_text(DOWNSTREAM.replace("{runs}", str(folder / "runs")).replace("{upstream}", str(upstream)))
    return path


class Stop(Exception):
    """Stands for the job being killed right after a checkpoint."""


@pytest.mark.slow
def test_resume_by_iteration_gives_the_same_final_metrics(upstream, monkeypatch):
    _, (run, _) = load_recipe(_downstream(upstream.parent, upstream))
    straight = train_run(OmegaConf.to_container(run.config), run.uid)
    assert straight.engine == "segmentation" and 0 <= straight.metrics["miou"] <= 100
    unused = ["cls_token", "head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert straight.extra.upstream_keys_unused == unused
    records = read_metrics(run.folder)
    assert [r["iteration"] for r in records] == [2, 4] and len(records[0]["val_per_class_iou"]) == 2

    shutil.rmtree(run.folder)  # the same run again, killed after its first checkpoint, then resumed
    real_save = checkpoint.save

    def save_then_die(path, payload):
        real_save(path, payload)
        raise Stop

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Stop):
        train_run(OmegaConf.to_container(run.config), run.uid)
    assert torch.load(run.folder / CHECKPOINT, weights_only=True)["iteration"] == 2
    monkeypatch.setattr(checkpoint, "save", real_save)
    resumed = train_run(OmegaConf.to_container(run.config), run.uid)
    assert resumed.metrics == straight.metrics and resumed.extra == straight.extra
    assert read_metrics(run.folder) == records
    assert read_result(run.folder)[0].best == straight.best


def test_poly_decay_per_iteration():
    assert engine.poly_lr(2e-4, 0.0, 0, 40000, 0.9) == 2e-4
    assert engine.poly_lr(2e-4, 0.0, 20000, 40000, 0.9) == pytest.approx(2e-4 * 0.5**0.9)
    assert engine.poly_lr(2e-4, 1e-6, 40000, 40000, 0.9) == 1e-6


# ------------------------------------------------------------------------------------------ the recipe


def test_a_row_must_keep_its_upstream_last_block(tmp_path, upstream):
    path = _downstream(tmp_path, upstream)
    path.write_text(path.read_text().replace("last_block: sar, baseline", "last_block: standard, baseline"))
    with pytest.raises(RecipeError, match=r"key 'last_block'.*'standard'.*has 'sar'"):
        load_recipe(path)


def test_table12_starts_from_table2_and_flags_the_printed_gain():
    recipe, runs = load_recipe(RECIPES_DIR / "table12.yaml")
    by_row = {row: run for run in runs for row in run.rows}
    assert set(by_row) == {"pvt", "pvt-code", "pvt-sar"} and by_row["pvt"] is by_row["pvt-code"]
    for row, upstream_row, block in (("pvt", "pvt", "standard"), ("pvt-sar", "pvt-sar", "sar")):
        config = by_row[row].config
        assert config.engine == "segmentation" and config.upstream.row == upstream_row
        assert config.last_block == block == by_row[row].upstream.config.last_block
        assert by_row[row].upstream.table == "table2" and not config.loss.sar
        seg = config.protocol.segmentation
        assert (seg.iterations, config.protocol.batch_size, config.protocol.lr) == (40000, 32, 2e-4)
    flagged = arithmetic(cells(recipe, []))
    assert [(c["id"], float(c["difference"])) for c in flagged] == [("pvt-sar", pytest.approx(1.3))]
    assert not math.isnan(cells(recipe, []).set_index("id").loc["pvt-code", "paper"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "protocol.segmentation.iterations=0",
            r"key 'protocol.segmentation.iterations': got 0, expected at least 1",
        ),
        ("protocol=deit", r"key 'protocol': got 'deit', expected a protocol with a 'segmentation' section"),
        ("loss.sar=true", r"key 'loss.sar': got True, expected false"),
        ("data.dataset=imagenet1k", r"key 'data.dataset': got 'imagenet1k', expected a segmentation dataset"),
    ],
)
def test_table12_refuses_bad_values_naming_file_and_key(override, message):
    with pytest.raises(RecipeError, match=message) as error:
        load_recipe(RECIPES_DIR / "table12.yaml", [override])
    assert "table12.yaml" in str(error.value)


def test_local_scale_segments_the_synthetic_objects_from_their_background():
    _, runs = load_recipe(RECIPES_DIR / "table12.yaml", ["scale=local"])
    config = runs[0].config
    seg = config.protocol.segmentation
    assert (seg.crop_size, list(seg.img_scale), seg.neck_channels, seg.head_channels) == (
        64,
        [256, 64],
        64,
        32,
    )
    assert seg_data.num_classes(config) == 2 and config.data.stands_for == "ade20k"
    train, val = seg_data.datasets(config)
    pixels, labels = val[0]
    assert pixels.shape == (3, 64, 64) and set(labels.unique().tolist()) == {0, 1, 255}
    with seeded(0, 1):
        pixels, labels = train[0]
    assert pixels.shape == (3, 64, 64) and set(labels.unique().tolist()) <= {0, 1, 255}
