"""The ADE20K reader on a tree generated in mmseg's layout: pairs, label reduction, what a broken tree
says, and the segmentation pipelines reading it."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import DatasetNotFoundError, build_dataset, check_available
from harness.data.ade20k import reduce_zero_label
from harness.segment.transforms import TestPipeline as EvalPipeline


def _tree(root: Path, counts: dict[str, int]) -> dict[str, list[np.ndarray]]:
    """ADEChallengeData2016 with `counts` images per split folder; each label map holds 0 (other), 1,
    150 and the image's index + 2, so every file is told apart."""
    written: dict[str, list[np.ndarray]] = {}
    for split, count in counts.items():
        images = root / "ADEChallengeData2016" / "images" / split
        annotations = root / "ADEChallengeData2016" / "annotations" / split
        images.mkdir(parents=True)
        annotations.mkdir(parents=True)
        written[split] = []
        for i in range(count):
            height, width = 20 + i, 30
            label = np.zeros((height, width), dtype=np.uint8)
            label[:, 10:20], label[:, 20:], label[0, 0] = 1, 150, i + 2
            pixels = np.full((height, width, 3), 10 * i, dtype=np.uint8)
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(pixels).save(images / f"{name}.jpg", quality=100)
            Image.fromarray(label).save(annotations / f"{name}.png")
            written[split].append(label)
    return written


def test_reads_pairs_in_the_real_layout_with_labels_reduced(tmp_path):
    written = _tree(tmp_path, {"training": 3, "validation": 2})
    check_available("ade20k", tmp_path)
    with pytest.warns(UserWarning, match="the train split holds 3 images, the official one 20210"):
        train = build_dataset("ade20k", "train", tmp_path)
    with pytest.warns(UserWarning, match="the val split holds 2 images, the official one 2000"):
        val = build_dataset("ade20k", "val", tmp_path)
    assert (len(train), len(val)) == (3, 2)
    for i, (image, labels) in enumerate(train):
        assert image.mode == "RGB" and labels.shape == (image.height, image.width) == (20 + i, 30)
        original = written["training"][i]
        assert labels.dtype == np.uint8 and np.array_equal(labels, reduce_zero_label(original))
        assert labels[0, 0] == i + 1 and labels[1, 0] == 255  # k -> k - 1, 0 (other) -> ignored
        assert set(np.unique(labels[1:])) == {0, 149, 255}


def test_reduce_zero_label_is_mmsegs():
    label = np.array([[0, 1, 2, 150]], dtype=np.uint8)
    assert reduce_zero_label(label).tolist() == [[255, 0, 1, 149]]


def test_a_pair_transform_sees_image_and_labels(tmp_path):
    _tree(tmp_path, {"training": 1, "validation": 1})
    with pytest.warns(UserWarning):
        val = build_dataset("ade20k", "val", tmp_path, EvalPipeline((2048, 512), 32))
    pixels, labels = val[0]
    assert pixels.shape == (3, 512, 768) and labels.shape == (20, 30) and labels.dtype == torch.int64


def test_a_missing_label_map_or_split_is_named(tmp_path):
    _tree(tmp_path, {"training": 2, "validation": 1})
    orphan = tmp_path / "ADEChallengeData2016" / "annotations" / "training" / "ADE_train_00000001.png"
    orphan.unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 images have no label map \(ADE_train_00000001\.png\)"):
        check_available("ade20k", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="the train split folder does not exist"):
        check_available("ade20k", tmp_path / "elsewhere")
    with pytest.raises(DatasetNotFoundError, match="no dataset root was given"):
        check_available("ade20k", None)
