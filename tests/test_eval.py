"""harness.eval: each metric against formulas and hand-made cases written here (not against its own code):
top-k by rank counting, ImageNet-A's 200-class restriction against timm's synset lists, mCE by hand and
against AugMix's AlexNet means, DINO's 60%-mass rule by brute force, Jaccard with void pixels."""

import dataclasses
import itertools
import pkgutil

import numpy as np
import pytest
import torch

from harness.eval import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    METRICS,
    Metric,
    best_head_jaccard,
    imagenet_a_accuracy,
    imagenet_a_indices,
    jaccard,
    keep_mass,
    mce,
    mean_corruption_error,
    topk_accuracy,
    topk_correct,
)

# AugMix's ALEXNET_ERR (google-research/augmix imagenet.py): AlexNet's error per corruption, averaged over
# the 5 severities (docs/protocols.md section 3).
ALEXNET_MEAN = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}


# -- the registry --------------------------------------------------------------------------------------------


def test_the_registry_names_each_metric_and_its_direction():
    assert {name: metric.direction for name, metric in METRICS.items()} == {
        "top1": "higher",
        "top5": "higher",
        "imagenet_a_top1": "higher",
        "mce": "lower",
        "mean_corruption_error": "lower",
        "jaccard": "higher",
        "miou": "higher",
        "ssl_loss": "lower",
        "spatial_entropy": "lower",
    }
    for name, metric in METRICS.items():
        assert metric.name == name and metric.description and metric.unit
    assert METRICS["mce"].better(51.6, 52.8) and not METRICS["mce"].better(52.8, 51.6)
    assert METRICS["top1"].better(80.0, 79.8) and not METRICS["top1"].better(79.8, 79.8)


def test_a_metric_is_frozen_and_has_a_valid_direction():
    with pytest.raises(dataclasses.FrozenInstanceError):
        METRICS["top1"].direction = "lower"
    with pytest.raises(ValueError, match="direction"):
        Metric("loss", "down", "a loss", "nats")


# -- top-k ---------------------------------------------------------------------------------------------------


def test_topk_on_hand_made_logits():
    logits = [
        [0.1, 0.9, 0.0, 0.5],  # target 1: top-1
        [0.8, 0.1, 0.3, 0.2],  # target 2: second
        [0.2, 0.1, 0.3, 0.4],  # target 1: last
        [0.0, 0.1, 0.7, 0.6],  # target 3: second
    ]
    targets = [1, 2, 1, 3]
    assert topk_correct(logits, targets, ks=(1, 2, 4)) == {1: 1, 2: 3, 4: 4}
    assert topk_accuracy(np.array(logits), np.array(targets), ks=(1, 2, 4)) == {1: 25.0, 2: 75.0, 4: 100.0}


def test_topk_matches_rank_counting():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 12, generator=generator)  # distinct values almost surely
    targets = torch.randint(0, 12, (300,), generator=generator)
    ranks = [
        sum(value > row[t] for value in row) for row, t in zip(logits.tolist(), targets.tolist(), strict=True)
    ]
    result = topk_accuracy(logits, targets, ks=(1, 3, 5))
    for k in (1, 3, 5):
        assert result[k] == pytest.approx(100.0 * sum(rank < k for rank in ranks) / 300)


@pytest.mark.parametrize(
    ("logits", "targets", "ks", "message"),
    [
        (torch.zeros(3, 4), torch.tensor([0, 1, 2]), (1, 5), "ks must be"),
        (torch.zeros(3, 4), torch.tensor([0, 1, 4]), (1,), "targets must lie in 0..3"),
        (torch.zeros(3, 4), torch.tensor([0, 1]), (1,), "targets must be"),
        (torch.zeros(12), torch.tensor([0]), (1,), "logits must be"),
        (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), (1,), "no samples"),
    ],
)
def test_topk_rejects_bad_input(logits, targets, ks, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(logits, targets, ks)


# -- ImageNet-A ----------------------------------------------------------------------------------------------


def test_the_imagenet_a_indices_are_imagenet_as_classes_in_its_order():
    indices = imagenet_a_indices()
    assert len(indices) == 200 and len(set(indices)) == 200
    assert indices[:10] == (6, 11, 13, 15, 17, 22, 23, 27, 30, 37)
    assert indices[-4:] == (984, 986, 987, 988)
    synsets_1k = pkgutil.get_data("timm.data", "_info/imagenet_synsets.txt").decode().split()
    synsets_a = pkgutil.get_data("timm.data", "_info/imagenet_a_synsets.txt").decode().split()
    assert len(synsets_1k) == 1000 and synsets_1k == sorted(synsets_1k)
    # ImageFolder numbers ImageNet-A's wnid folders in sorted order: label i is synsets_a[i]
    assert synsets_a == sorted(synsets_a)
    assert [synsets_1k[i] for i in indices] == synsets_a


def test_imagenet_a_accuracy_takes_the_argmax_over_the_200_classes_only():
    indices = imagenet_a_indices()
    outside = sorted(set(range(1000)) - set(indices))
    generator = torch.Generator().manual_seed(1)
    n = 40
    logits = torch.randn(n, 1000, generator=generator)
    targets = torch.randint(0, 200, (n,), generator=generator)
    for i in range(n):
        logits[i, outside[i]] = 100.0  # the 1000-way argmax is never an ImageNet-A class
        if i % 4 != 0:
            logits[i, indices[targets[i]]] = 50.0  # three in four: the target wins among the 200
    assert not any(int(logits[i].argmax()) in indices for i in range(n))
    expected = (
        100.0
        * sum(
            max(range(200), key=lambda j, i=i: float(logits[i, indices[j]])) == int(targets[i])
            for i in range(n)
        )
        / n
    )
    assert expected >= 75.0
    assert imagenet_a_accuracy(logits, targets) == pytest.approx(expected)
    assert imagenet_a_accuracy(logits.numpy(), targets.numpy()) == pytest.approx(expected)


def test_imagenet_a_wants_imagenet_1k_logits_and_imagenet_a_targets():
    with pytest.raises(ValueError, match=r"\[N, 1000\]"):
        imagenet_a_accuracy(torch.zeros(2, 200), torch.tensor([0, 1]))
    logits = torch.zeros(1, 1000)
    logits[0, imagenet_a_indices()[199]] = 1.0
    assert imagenet_a_accuracy(logits, torch.tensor([199])) == 100.0
    with pytest.raises(ValueError, match=r"0\.\.199"):
        imagenet_a_accuracy(logits, torch.tensor([imagenet_a_indices()[199]]))  # a 1k index, not a label


# -- ImageNet-C ----------------------------------------------------------------------------------------------


def _constant(value: float, corruptions=CORRUPTIONS) -> dict:
    return {name: [value] * 5 for name in corruptions}


def test_the_alexnet_rows_average_to_augmixs_table():
    assert set(ALEXNET_ERRORS) == set(CORRUPTIONS) == set(ALEXNET_MEAN)
    for name, row in ALEXNET_ERRORS.items():
        assert len(row) == 5
        assert sum(row) / 5 == pytest.approx(ALEXNET_MEAN[name], abs=5e-7), name
    assert ALEXNET_ERRORS["gaussian_noise"] == (0.69528, 0.82542, 0.93554, 0.98138, 0.99452)  # issue #10


def test_mce_is_100_against_itself():
    assert mce(ALEXNET_ERRORS) == pytest.approx(100.0)
    errors = {name: [0.1 * (i % 7) + 0.01 * s for s in range(5)] for i, name in enumerate(CORRUPTIONS)}
    assert mce(errors, reference=errors) == pytest.approx(100.0)


def test_mce_by_hand_with_a_custom_reference():
    # 13 corruptions equal to the reference (CE = 1); gaussian_noise: 1.5 / 3.0 = 0.5; fog: 2.0 / 1.0 = 2
    reference = _constant(0.5)
    errors = _constant(0.5)
    errors["gaussian_noise"], reference["gaussian_noise"] = [0.1, 0.2, 0.3, 0.4, 0.5], [0.6] * 5
    errors["fog"], reference["fog"] = [0.4] * 5, [0.0, 0.1, 0.2, 0.3, 0.4]
    assert mce(errors, reference=reference) == pytest.approx(100.0 * (0.5 + 2.0 + 13) / 15)


def test_mce_against_alexnet_uses_the_per_corruption_sums():
    # every error 0.5: CE_c = 5 * 0.5 / (5 * mean_c)
    expected = 100.0 * sum(0.5 / ALEXNET_MEAN[name] for name in CORRUPTIONS) / 15
    assert mce(_constant(0.5)) == pytest.approx(expected, abs=1e-4)
    # a model with every severity's error halved has mCE 50
    assert mce({name: [e / 2 for e in row] for name, row in ALEXNET_ERRORS.items()}) == pytest.approx(50.0)


def test_mean_corruption_error_is_the_plain_mean():
    errors = {name: [(i + s) / 100 for s in range(5)] for i, name in enumerate(CORRUPTIONS)}
    assert mean_corruption_error(errors) == pytest.approx(
        100 * np.mean([(i + s) / 100 for i in range(15) for s in range(5)])
    )
    assert mean_corruption_error(_constant(0.3)) == pytest.approx(30.0)
    nineteen = {**_constant(0.2), **_constant(0.6, EXTRA_CORRUPTIONS)}
    assert mean_corruption_error(nineteen, CORRUPTIONS + EXTRA_CORRUPTIONS) == pytest.approx(
        100 * (15 * 0.2 + 4 * 0.6) / 19
    )
    with pytest.raises(ValueError, match="unexpected gaussian_blur, saturate, spatter, speckle_noise"):
        mean_corruption_error(nineteen)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("fog"), "missing fog"),
        (lambda e: e.update(spatter=[0.5] * 5), "unexpected spatter"),
        (lambda e: e.update(snow=[0.5] * 4), r"\['snow'\]: 4 severities, expected 5"),
        (lambda e: e.update(frost=[0.5, 0.5, 45.0, 0.5, 0.5]), r"\['frost'\] severity 3: error 45.0"),
        (lambda e: e.update(contrast=[0.5, -0.1, 0.5, 0.5, 0.5]), r"\['contrast'\] severity 2"),
        (lambda e: e.update(pixelate=[0.5, 0.5, 0.5, 0.5, float("nan")]), r"\['pixelate'\] severity 5"),
    ],
)
def test_corruption_errors_are_checked(change, message):
    errors = _constant(0.5)
    change(errors)
    with pytest.raises(ValueError, match=message):
        mce(errors)
    with pytest.raises(ValueError, match=message):
        mean_corruption_error(errors)


def test_the_reference_is_checked():
    with pytest.raises(ValueError, match="reference: missing shot_noise"):
        mce(_constant(0.5), reference={k: v for k, v in _constant(0.5).items() if k != "shot_noise"})
    with pytest.raises(ValueError, match="'alexnet' or a mapping"):
        mce(_constant(0.5), reference="resnet50")
    with pytest.raises(ValueError, match="sum to 0"):
        mce(_constant(0.5), reference={**_constant(0.5), "fog": [0.0] * 5})


# -- keep_mass -----------------------------------------------------------------------------------------------


def test_keep_mass_on_hand_made_maps():
    # 4 + 3 = 7 of 10 >= 6: the 3 crosses 60% and is kept, the 2 is not
    assert keep_mass(np.array([[1.0, 2.0], [3.0, 4.0]])).tolist() == [[False, False], [True, True]]
    # exactly at the boundary (dyadic, so exact): 0.5 alone holds 50%, so the 0.25s are not needed
    attention = np.array([[0.5, 0.25], [0.25, 0.0]])
    assert keep_mass(attention, mass=0.5).tolist() == [[True, False], [False, False]]
    # 75%: one of the tied 0.25s; the stable sort keeps the later one in row-major order
    assert keep_mass(attention, mass=0.75).tolist() == [[True, False], [True, False]]
    # all of the mass: every positive cell, never a zero one
    assert keep_mass(np.array([[0.0, 1.0], [2.0, 0.0]]), mass=1.0).tolist() == [[False, True], [True, False]]


def test_keep_mass_splits_ties_at_the_boundary():
    assert keep_mass(np.full((2, 2), 0.25), mass=0.5).tolist() == [[False, False], [True, True]]
    assert keep_mass(np.full((2, 2), 0.25)).tolist() == [[False, True], [True, True]]  # 3 x 25% >= 60%
    assert keep_mass(np.full((3, 3), 1.0)).sum() == 6  # 5/9 < 0.6 <= 6/9


def test_keep_mass_is_per_map_and_scale_free():
    maps = np.array([[[1.0, 2.0], [3.0, 4.0]], [[40.0, 1.0], [1.0, 1.0]], [[10.0, 20.0], [30.0, 40.0]]])
    assert keep_mass(maps).tolist() == [
        [[False, False], [True, True]],
        [[True, False], [False, False]],
        [[False, False], [True, True]],
    ]


def _dino_rule(attention: np.ndarray, mass: float) -> np.ndarray:
    """DINO visualize_attention.py's rule, written out: ascending sort, normalise, cumsum > 1 - mass."""
    flat = torch.from_numpy(attention.reshape(attention.shape[0], -1))
    values, order = torch.sort(flat, dim=1)
    kept_sorted = torch.cumsum(values / values.sum(dim=1, keepdim=True), dim=1) > 1 - mass
    kept = torch.zeros_like(kept_sorted)
    for head in range(flat.shape[0]):
        kept[head, order[head]] = kept_sorted[head]
    return kept.reshape(attention.shape).numpy()


@pytest.mark.parametrize("mass", [0.3, 0.6, 0.9])
def test_keep_mass_is_dinos_rule_and_the_smallest_set(mass):
    rng = np.random.default_rng(2)
    maps = rng.random((6, 3, 3)) ** 3  # distinct values almost surely
    kept = keep_mass(maps, mass)
    assert (kept == _dino_rule(maps, mass)).all()
    for attention, keep in zip(maps, kept, strict=True):
        values = attention.ravel()
        # the fewest cells reaching `mass` of the total, by brute force over subsets
        smallest = min(
            size
            for size in range(1, 10)
            for subset in itertools.combinations(range(9), size)
            if values[list(subset)].sum() >= mass * values.sum()
        )
        assert keep.sum() == smallest
        assert values[keep.ravel()].sum() >= mass * values.sum()
        assert values[keep.ravel()].min() > values[~keep.ravel()].max()  # the largest cells


def test_keep_mass_rejects_bad_maps():
    with pytest.raises(ValueError, match="non-negative"):
        keep_mass(np.array([[0.5, -0.1], [0.3, 0.3]]))
    with pytest.raises(ValueError, match="sums to 0"):
        keep_mass(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="mass"):
        keep_mass(np.ones((2, 2)), mass=0.0)
    with pytest.raises(ValueError, match="last two axes"):
        keep_mass(np.ones(4))


# -- Jaccard -------------------------------------------------------------------------------------------------


def test_jaccard_by_hand():
    masks = np.array([[True, True], [False, False]])
    gt = np.array([[True, False], [True, False]])
    assert jaccard(masks, gt) == pytest.approx(1 / 3)
    assert jaccard(gt, gt) == 1.0
    assert jaccard(masks, ~masks) == 0.0


def test_jaccard_leaves_void_pixels_out_of_both_counts():
    masks = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=bool)
    gt = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    void = np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=bool)
    # without: inter {(0,0),(0,1)} = 2, union 5 cells; void drops (0,2) (pred only) and (2,0) (gt only)
    assert jaccard(masks, gt) == pytest.approx(2 / 5)
    assert jaccard(masks, gt, ignore=void) == pytest.approx(2 / 3)
    # a void pixel inside both counts in neither
    assert jaccard(masks, masks, ignore=np.eye(3, dtype=bool)) == 1.0


def test_jaccard_rejects_bad_input():
    with pytest.raises(ValueError, match="both empty"):
        jaccard(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="both empty"):
        jaccard(np.eye(2, dtype=bool), np.eye(2, dtype=bool), ignore=np.eye(2, dtype=bool))
    with pytest.raises(TypeError, match="boolean"):
        jaccard(np.ones((2, 2)), np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="same shape"):
        jaccard(np.ones((2, 2), bool), np.ones((2, 3), bool))


LABELS = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 255, 0],
        [0, 255, 2, 2],
        [0, 0, 2, 2],
    ]
)


def _heads() -> np.ndarray:
    heads = np.zeros((2, 4, 4), dtype=bool)
    heads[0, :2, :2] = True  # class 1 exactly ...
    heads[0, 1, 2] = True  # ... plus a void pixel
    heads[1, 2:, 1:] = True  # class 2, a void pixel and a background pixel
    return heads


def test_best_head_jaccard_by_hand():
    # class 1: head 0, 4/4 (void excluded) or 4/5; class 2: head 1, 4/5 (void excluded) or 4/6
    assert best_head_jaccard(_heads(), LABELS) == pytest.approx((1.0 + 0.8) / 2)
    assert best_head_jaccard(_heads(), LABELS, exclude_void=False) == pytest.approx((0.8 + 4 / 6) / 2)
    # the same as jaccard with the void pixels ignored, best head per class
    void = LABELS == 255
    per_class = [max(jaccard(head, LABELS == c, ignore=void) for head in _heads()) for c in (1, 2)]
    assert best_head_jaccard(_heads(), LABELS) == pytest.approx(np.mean(per_class))


def test_best_head_jaccard_merges_the_instances_of_a_class():
    labels = np.array([[3, 0, 3], [0, 0, 0], [3, 0, 3]])
    heads = np.zeros((1, 3, 3), dtype=bool)
    heads[0, 0, :] = True  # two of the four class-3 corners and a background pixel
    assert best_head_jaccard(heads, labels) == pytest.approx(2 / 5)


def _sar_rule(heads: np.ndarray, labels: np.ndarray) -> float:
    """SAR's get_per_sample_jaccard as it behaves, pixel by pixel: void pixels stay in the union."""
    scores = []
    for c in sorted(set(labels.ravel().tolist()) - {0, 255}):
        best = 0.0
        for head in heads:
            pairs = [(bool(p), int(t) == c) for p, t in zip(head.ravel(), labels.ravel(), strict=True)]
            best = max(best, sum(p and g for p, g in pairs) / sum(p or g for p, g in pairs))
        scores.append(best)
    return sum(scores) / len(scores)


def test_best_head_jaccard_without_void_exclusion_is_sars_score():
    rng = np.random.default_rng(3)
    for _ in range(10):
        labels = rng.choice([0, 0, 1, 5, 255], size=(6, 6))
        labels[0, 0] = 5
        heads = rng.random((3, 6, 6)) < 0.4
        assert best_head_jaccard(heads, labels, exclude_void=False) == pytest.approx(_sar_rule(heads, labels))
        assert best_head_jaccard(heads, labels) >= best_head_jaccard(heads, labels, exclude_void=False)


def test_best_head_jaccard_rejects_bad_input():
    with pytest.raises(ValueError, match="no foreground class"):
        best_head_jaccard(_heads(), np.where(LABELS == 255, 255, 0))
    with pytest.raises(ValueError, match=r"\[H, h, w\]"):
        best_head_jaccard(_heads()[0], LABELS)
    with pytest.raises(TypeError, match="integer labels"):
        best_head_jaccard(_heads(), LABELS.astype(float))
