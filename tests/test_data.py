"""The dataset registry against tiny ImageNet-layout trees written under tmp_path, and the synthetic set:
determinism, balance, masks, and that its label lives in the objects, not in the background."""

import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.datasets import ImageFolder

from harness.data import (
    DATASETS,
    IMAGENET100_WNIDS,
    DatasetNotFoundError,
    LabeledSubset,
    SyntheticConfig,
    SyntheticShapes,
    build_dataset,
    check_available,
    dataset_spec,
)

EXTRA_WNIDS = ("n01440764", "n01443537", "n15075141")  # ImageNet classes outside ImageNet-100
SMALL_TRAIN = {"n01440764": 10, "n01443537": 7, "n01484850": 4, "n01491361": 1}  # images per class


def write_image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (value % 256, 40, 200)).save(path)


def write_tree(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    """An ImageNet-layout tree: root/<split>/<wnid>/<wnid>_<i>.JPEG (every third file a .png)."""
    for split, counts in (("train", train), ("val", val)):
        for wnid, count in counts.items():
            for i in range(count):
                write_image(root / split / wnid / f"{wnid}_{i}.{'png' if i % 3 == 2 else 'JPEG'}", i)
    return root


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("small"), SMALL_TRAIN, dict.fromkeys(SMALL_TRAIN, 2))


@pytest.fixture(scope="module")
def in100_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wnids = (*IMAGENET100_WNIDS, *EXTRA_WNIDS)
    return write_tree(
        tmp_path_factory.mktemp("in100"), {w: 1 + i % 2 for i, w in enumerate(wnids)}, dict.fromkeys(wnids, 1)
    )


def test_imagenet100_class_list() -> None:
    lines = (Path(__file__).parents[1] / "harness" / "data" / "imagenet100.txt").read_text().splitlines()
    assert lines == list(IMAGENET100_WNIDS)
    assert len(lines) == len(set(lines)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in lines)
    assert (lines[0], lines[-1]) == ("n02869837", "n02090622")  # the order of the CMC list
    assert not set(EXTRA_WNIDS) & set(lines)


def test_registry_entries() -> None:
    assert set(DATASETS) == {
        "imagenet1k",
        "imagenet100",
        "synthetic",
        "cifar10",
        "cifar100",
        "flowers102",
    } | {
        "pets",
        "imagenet_a",
        "imagenet_c",
        "voc2012",
        "stanford_cars",
        "domainnet_clipart",
        "domainnet_painting",
        "domainnet_sketch",
        "ade20k",
    }
    assert [dataset_spec(n).num_classes for n in ("imagenet1k", "imagenet100", "synthetic")] == [
        1000,
        100,
        10,
    ]
    assert all(spec.name == name and spec.description for name, spec in DATASETS.items())
    assert "<root>/train/<wnid>/*.JPEG" in dataset_spec("imagenet100").layout
    assert dataset_spec("synthetic").layout == ""
    with pytest.raises(KeyError, match=r"'imagenet21k'.*imagenet1k, imagenet100, synthetic"):
        dataset_spec("imagenet21k")


def test_imagenet1k_reads_class_folders(small_root: Path) -> None:
    with pytest.warns(UserWarning, match="found 4 class folders .* expected 1000"):
        train = build_dataset("imagenet1k", "train", str(small_root), transforms.ToTensor())
    assert isinstance(train, ImageFolder)
    assert train.classes == sorted(SMALL_TRAIN)
    assert len(train) == sum(SMALL_TRAIN.values())
    assert Counter(train.targets) == {i: SMALL_TRAIN[w] for i, w in enumerate(train.classes)}
    image, label = train[len(train) - 1]
    assert image.shape == (3, 8, 8) and label == 3
    with pytest.warns(UserWarning):
        assert len(build_dataset("imagenet1k", "val", small_root)) == 2 * len(SMALL_TRAIN)


def test_imagenet100_keeps_its_classes_in_sorted_order(in100_root: Path) -> None:
    for split in ("train", "val"):
        dataset = build_dataset("imagenet100", split, in100_root)
        assert dataset.classes == sorted(IMAGENET100_WNIDS)
        assert set(dataset.targets) == set(range(100))
        for path, label in dataset.samples:
            assert Path(path).parent.name == dataset.classes[label]
    train = build_dataset("imagenet100", "train", in100_root)
    assert len(train) == sum(1 + i % 2 for i in range(100))
    image, label = train[0]
    assert image.mode == "RGB" and label == 0


def test_imagenet100_names_missing_class_folders(tmp_path: Path) -> None:
    missing = [IMAGENET100_WNIDS[i] for i in (3, 50, 99)]
    present = [w for w in IMAGENET100_WNIDS if w not in missing]
    write_tree(tmp_path, dict.fromkeys(present, 1), dict.fromkeys(IMAGENET100_WNIDS, 1))
    with pytest.raises(DatasetNotFoundError, match="3 of its 100 class folders") as error:
        build_dataset("imagenet100", "val", tmp_path)  # val is complete: the check covers both splits
    assert all(wnid in str(error.value) for wnid in missing)
    assert str(tmp_path / "train") in str(error.value)
    check_available("imagenet1k", tmp_path)  # the same tree is a (small) valid ImageNet-1k layout


@pytest.mark.parametrize("name", ["imagenet1k", "imagenet100"])
def test_check_available_says_what_to_do(name: str, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        check_available(name, None)
    message = str(error.value)
    assert name in message and "data.root=" in message and "scale=local" in message
    assert "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*" in message

    with pytest.raises(DatasetNotFoundError) as error:
        check_available(name, tmp_path / "nowhere", config_key="data.imagenet_root")
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "train") in message
    assert "data.imagenet_root=" in message and "scale=local" in message and name in message

    write_image(tmp_path / "train" / "n01440764" / "a.JPEG", 0)
    write_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", 0)  # the flat official val layout
    with pytest.raises(DatasetNotFoundError, match="no class folders") as error:
        check_available(name, tmp_path)
    assert str(tmp_path / "val") in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="scale=local"):
        build_dataset(name, "train", tmp_path)


def test_check_available_synthetic_never_raises(tmp_path: Path) -> None:
    check_available("synthetic", None)
    check_available("synthetic", tmp_path / "nowhere")


def test_class_folder_without_images_is_reported(tmp_path: Path) -> None:
    write_tree(tmp_path, {"n01440764": 1}, {"n01440764": 1})
    (tmp_path / "train" / "n01443537").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"n01443537.*scale=local"):
        build_dataset("imagenet1k", "train", tmp_path)


def test_fraction_is_stratified_and_seeded(small_root: Path) -> None:
    with pytest.warns(UserWarning):
        full = build_dataset("imagenet1k", "train", small_root)
        half = build_dataset("imagenet1k", "train", small_root, fraction=0.5, fraction_seed=3)
        again = build_dataset("imagenet1k", "train", small_root, fraction=0.5, fraction_seed=3)
        other = [
            build_dataset("imagenet1k", "train", small_root, fraction=0.5, fraction_seed=s) for s in range(4)
        ]
        val = build_dataset("imagenet1k", "val", small_root, fraction=0.1)
    assert isinstance(half, LabeledSubset) and half.classes == full.classes
    # 10, 7, 4, 1 images -> round half up, at least one: 5, 4, 2, 1
    assert Counter(half.targets) == {0: 5, 1: 4, 2: 2, 3: 1}
    assert half.targets == [full.targets[i] for i in half.indices]
    assert list(half.indices) == sorted(half.indices)
    assert half.indices == again.indices
    assert len({tuple(subset.indices) for subset in other}) > 1
    assert half[0][1] == full[half.indices[0]][1]
    assert len(val) == len(full.classes) * 2  # val is never subsampled


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, math.nan])
def test_invalid_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(fraction))):
        build_dataset("synthetic", "train", None, fraction=fraction)


@pytest.mark.parametrize("name", ["imagenet1k", "imagenet100", "synthetic"])
def test_invalid_split(name: str) -> None:
    with pytest.raises(ValueError, match="'test'"):
        build_dataset(name, "test", None)


def small_config(**kwargs: int) -> SyntheticConfig:
    return SyntheticConfig(
        **{"num_classes": 5, "image_size": 32, "train_per_class": 4, "val_per_class": 2, **kwargs}
    )


def pixels(dataset: SyntheticShapes, index: int) -> np.ndarray:
    return np.asarray(dataset[index][0])


def test_synthetic_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.data import synthetic

    a = SyntheticShapes(small_config(), "train")
    monkeypatch.setattr(synthetic, "_RENDERS", type(synthetic._RENDERS)())  # b renders its own images
    b = SyntheticShapes(small_config(), "train")
    for i in (0, 7, len(a) - 1):
        np.testing.assert_array_equal(pixels(a, i), pixels(b, i))
        np.testing.assert_array_equal(a.mask(i), b.mask(i))
    np.testing.assert_array_equal(pixels(a, -1), pixels(a, len(a) - 1))
    with pytest.raises(IndexError):
        a[len(a)]


def test_datasets_of_the_same_images_render_them_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process renders an image once for every dataset of it, whatever the split's length (a stand-in of
    a few images per class reuses the val split's); another split, seed or size renders its own, and only
    the most recently asked-for datasets are kept."""
    from harness.data import synthetic

    drawn: list[tuple[str, int]] = []
    draw = SyntheticShapes._draw

    def counted(self: SyntheticShapes, index: int):
        drawn.append((self.split, index))
        return draw(self, index)

    monkeypatch.setattr(SyntheticShapes, "_draw", counted)
    monkeypatch.setattr(synthetic, "_RENDERS", type(synthetic._RENDERS)())
    val = SyntheticShapes(small_config(val_per_class=6), "val")
    first = [pixels(val, i) for i in range(len(val))]
    assert len(drawn) == len(val) == 30
    short = SyntheticShapes(small_config(val_per_class=2), "val")  # its 10 images are val's first 10
    for i in range(len(short)):
        np.testing.assert_array_equal(pixels(short, i), first[i])
    assert len(drawn) == 30
    SyntheticShapes(small_config(), "train")[0], SyntheticShapes(small_config(image_size=48), "val")[0]
    assert drawn[30:] == [("train", 0), ("val", 0)]
    for seed in range(1, synthetic.RENDERS_KEPT + 1):
        SyntheticShapes(small_config(seed=seed), "val")[0]
    SyntheticShapes(small_config(val_per_class=6), "val")[0]  # pushed out by the newer ones: drawn again
    assert drawn[-1] == ("val", 0) and len(drawn) == 30 + 2 + synthetic.RENDERS_KEPT + 1


def test_synthetic_seeds_and_splits_differ() -> None:
    train, val = SyntheticShapes(small_config(), "train"), SyntheticShapes(small_config(), "val")
    other = SyntheticShapes(small_config(seed=1), "train")
    for i in range(len(val)):
        assert not np.array_equal(pixels(train, i), pixels(val, i))
        assert not np.array_equal(pixels(train, i), pixels(other, i))
    assert train.classes == val.classes
    assert train.classes != other.classes  # a seed maps classes to other shapes and appearances


def test_synthetic_labels_images_and_masks() -> None:
    config = small_config()
    for split, per_class in (("train", 4), ("val", 2)):
        dataset = SyntheticShapes(config, split)
        assert len(dataset) == 5 * per_class
        assert Counter(dataset.targets) == dict.fromkeys(range(5), per_class)
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert label == dataset.targets[i]
            assert image.mode == "RGB" and image.size == (32, 32)
            mask = dataset.mask(i)
            assert mask.dtype == bool and mask.shape == (32, 32)
            assert 0 < mask.sum() < 0.6 * mask.size


def test_synthetic_object_sizes_follow_the_config() -> None:
    """Larger `min_object`/`max_object` give larger objects; out-of-range fractions are refused by name."""
    sizes = {}
    for bounds in ((0.15, 0.45), (0.3, 0.6)):
        config = SyntheticConfig(
            num_classes=4, image_size=64, train_per_class=10, min_object=bounds[0], max_object=bounds[1]
        )
        dataset = SyntheticShapes(config, "train")
        sizes[bounds] = np.mean([dataset.mask(i).mean() for i in range(len(dataset))])
    assert sizes[0.3, 0.6] > 1.5 * sizes[0.15, 0.45]
    with pytest.raises(ValueError, match="min_object and max_object"):
        SyntheticConfig(min_object=0.5, max_object=0.4)


def test_synthetic_with_transform_and_through_the_registry() -> None:
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.25] * 3)])
    dataset = build_dataset("synthetic", "val", None, transform, synthetic=small_config(image_size=48))
    assert isinstance(dataset, SyntheticShapes) and len(dataset) == 10
    image, label = dataset[3]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 48, 48) and label == 3
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch[0].shape == (4, 3, 48, 48) and batch[1].tolist() == [0, 1, 2, 3]

    default = build_dataset("synthetic", "train", "/ignored")
    assert default.config == SyntheticConfig() and len(default) == 1000
    subset = build_dataset("synthetic", "train", None, fraction=0.25, synthetic=small_config())
    assert Counter(subset.targets) == dict.fromkeys(range(5), 1) and len(subset.classes) == 5


def grid(config: SyntheticConfig) -> tuple[Counter, Counter]:
    """How many classes use each shape and each appearance."""
    classes = SyntheticShapes(config, "val").classes
    assert len(set(classes)) == config.num_classes
    return Counter(c.split("/", 1)[0] for c in classes), Counter(c.split("/", 1)[1] for c in classes)


def test_synthetic_classes_share_shapes_and_appearances() -> None:
    """Each shape and each colour/pattern appearance is used by several classes, so only both together
    name the class: `shapes` shape families (2 by default) x as many appearances as the classes need, more
    shapes where the 180 appearances do not suffice; 100 classes fit."""
    shapes, appearances = grid(small_config(num_classes=100))
    assert len(shapes) == 2 and len(appearances) == 50
    assert set(shapes.values()) == {50} and set(appearances.values()) == {2}
    shapes, appearances = grid(small_config(num_classes=100, shapes=10))  # a square grid
    assert len(shapes) == len(appearances) == 10
    assert min(shapes.values()) == min(appearances.values()) == 10
    shapes, appearances = grid(small_config(num_classes=1000, val_per_class=1))  # 2 x 180 < 1000
    assert len(shapes) == 6 and len(appearances) == 167
    with pytest.raises(ValueError, match=r"shapes must be in \[2, 12\].*colours"):
        SyntheticConfig(shapes=1)
    with pytest.raises(ValueError, match="num_classes"):
        SyntheticConfig(num_classes=1)
    with pytest.raises(ValueError, match="image_size"):
        SyntheticConfig(image_size=16)


def colour_histograms(dataset: SyntheticShapes, background_only: bool) -> np.ndarray:
    """4x4x4-bin RGB histograms of every image, of all pixels or of the pixels outside the mask only."""
    features = []
    for i in range(len(dataset)):
        rgb = np.asarray(dataset[i][0]).reshape(-1, 3) // 64
        if background_only:
            rgb = rgb[~dataset.mask(i).reshape(-1)]
        counts = np.bincount(rgb[:, 0] * 16 + rgb[:, 1] * 4 + rgb[:, 2], minlength=64)
        features.append(counts / counts.sum())
    return np.stack(features)


def nearest_mean_accuracy(config: SyntheticConfig, background_only: bool) -> float:
    train, val = SyntheticShapes(config, "train"), SyntheticShapes(config, "val")
    x, y = colour_histograms(train, background_only), np.asarray(train.targets)
    mean, std = x.mean(0), x.std(0) + 1e-4
    centroids = np.stack([((x - mean) / std)[y == c].mean(0) for c in range(config.num_classes)])
    z = (colour_histograms(val, background_only) - mean) / std
    predicted = np.argmin(((z[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((predicted == np.asarray(val.targets)).mean())


def test_synthetic_label_is_in_the_objects_not_the_background() -> None:
    """Even crude colour statistics find the class when the objects are visible, and drop to chance (0.1)
    with the objects cut out: the background is label-free by construction."""
    config = SyntheticConfig(num_classes=10, image_size=32, train_per_class=60, val_per_class=30)
    assert nearest_mean_accuracy(config, background_only=False) >= 0.25
    assert nearest_mean_accuracy(config, background_only=True) <= 0.2
