"""The synthetic stand-ins for ImageNet-A, ImageNet-C and VOC 2012 (scale=local): determinism, shapes, the
hard split's class subset and difficulty, the corruptions through our compatibility layer for
imagecorruptions 1.1.2 on NumPy 2 / scikit-image 0.26, and the label maps' values and void band."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchvision import transforms

from harness.data import (
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    VOC_VOID,
    SyntheticConfig,
    SyntheticCorrupted,
    SyntheticHard,
    SyntheticSegmentation,
    SyntheticShapes,
    stand_in,
)


def config(**kwargs) -> SyntheticConfig:
    return SyntheticConfig(**{"num_classes": 6, "image_size": 64, "val_per_class": 4, **kwargs})


def pixels(dataset, index: int) -> np.ndarray:
    return np.asarray(dataset[index][0])


def test_stand_in_builds_each_by_the_name_of_the_real_dataset() -> None:
    assert isinstance(stand_in("imagenet_a", config()), SyntheticHard)
    corrupted = stand_in("imagenet_c", config(), corruption="fog", severity=2)
    assert isinstance(corrupted, SyntheticCorrupted) and (corrupted.corruption, corrupted.severity) == (
        "fog",
        2,
    )
    assert isinstance(stand_in("voc2012", config()), SyntheticSegmentation)
    with pytest.raises(ValueError, match=r"'cifar10'.*imagenet_a, imagenet_c, voc2012"):
        stand_in("cifar10", config())
    with pytest.raises(ValueError, match="imagenet_c only"):
        stand_in("voc2012", config(), severity=1)
    with pytest.raises(ValueError, match="corruption"):
        stand_in("imagenet_c", config())


# ------------------------------------------------------------------------------------------- ImageNet-A


@pytest.mark.parametrize(("num_classes", "expected"), [(2, (0, 1)), (3, (0, 2)), (6, (0, 2, 4))])
def test_hard_split_covers_every_other_class(num_classes: int, expected: tuple[int, ...]) -> None:
    hard = SyntheticHard(config(num_classes=num_classes))
    training = SyntheticShapes(config(num_classes=num_classes), "train").classes
    assert hard.class_indices == expected
    assert hard.classes == [training[c] for c in expected]
    assert len(hard) == 4 * len(expected)
    assert hard.targets == [i % len(expected) for i in range(len(hard))]
    for i in range(len(expected)):
        image, label = hard[i]
        assert label == i and image.mode == "RGB" and image.size == (64, 64)


def test_hard_split_is_deterministic_and_its_own_split() -> None:
    a, b = SyntheticHard(config()), SyntheticHard(config())
    val, other_seed = SyntheticShapes(config(), "val"), SyntheticHard(config(seed=1))
    for i in range(len(a)):
        np.testing.assert_array_equal(pixels(a, i), pixels(b, i))
        np.testing.assert_array_equal(a.mask(i), b.mask(i))
        assert not np.array_equal(pixels(a, i), pixels(val, i))
        assert not np.array_equal(pixels(a, i), pixels(other_seed, i))
    np.testing.assert_array_equal(pixels(a, -1), pixels(a, len(a) - 1))
    with pytest.raises(IndexError):
        a[len(a)]
    assert SyntheticHard(config(), transform=transforms.ToTensor())[0][0].shape == (3, 64, 64)


def object_contrast(dataset, index: int) -> float:
    """Mean absolute RGB difference between the object's visible pixels and the rest of the image."""
    image, mask = pixels(dataset, index).astype(float), dataset.mask(index)
    return float(np.abs(image[mask].mean(0) - image[~mask].mean(0)).mean())


def test_hard_split_objects_are_smaller_fainter_and_partly_hidden() -> None:
    """Proxies of difficulty against the clean val split, where every object pixel shows: the hard split's
    objects are partly hidden (by 1-2 foreign blobs), cover less of the image and stand out less."""
    hard, val = SyntheticHard(config(val_per_class=8)), SyntheticShapes(config(val_per_class=8), "val")
    visible = [hard.visible_fraction(i) for i in range(len(hard))]
    assert np.mean(np.array(visible) < 1) > 0.9 and np.mean(visible) < 0.85 and min(visible) > 0.25
    assert np.mean([hard.mask(i).mean() for i in range(len(hard))]) < 0.6 * np.mean(
        [val.mask(i).mean() for i in range(len(hard))]
    )
    assert np.mean([object_contrast(hard, i) for i in range(len(hard))]) < 0.85 * np.mean(
        [object_contrast(val, i) for i in range(len(hard))]
    )


# ------------------------------------------------------------------------------------------- ImageNet-C


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    return pixels(SyntheticShapes(config(), "val"), 0).astype(float)


def corrupted(corruption: str, severity: int, **kwargs) -> SyntheticCorrupted:
    return SyntheticCorrupted(config(**kwargs), corruption, severity, transform=np.asarray)


@pytest.mark.parametrize("corruption", IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS)
def test_every_corruption_and_severity_runs_and_changes_the_image(corruption: str, clean: np.ndarray) -> None:
    """glass_blur and gaussian_blur need the `multichannel` -> `channel_axis` translation, fog `np.float_`."""
    for severity in range(1, 6):
        image = pixels(corrupted(corruption, severity), 0)
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
        assert np.abs(image - clean).mean() > 1


@pytest.mark.parametrize(
    "corruption", ["gaussian_noise", "impulse_noise", "defocus_blur", "contrast", "pixelate"]
)
def test_severity_5_corrupts_more_than_severity_1(corruption: str, clean: np.ndarray) -> None:
    mild, severe = (np.abs(pixels(corrupted(corruption, s), 0) - clean).mean() for s in (1, 5))
    assert severe > 1.2 * mild


@pytest.mark.parametrize("corruption", ["gaussian_noise", "impulse_noise", "glass_blur", "frost", "fog"])
def test_corruptions_are_deterministic_and_leave_the_global_rng_alone(corruption: str) -> None:
    """impulse_noise included: scikit-image's random_noise draws from its own Generator unless seeded."""
    np.random.seed(7)  # noqa: NPY002
    expected = np.random.random_sample(3)  # noqa: NPY002
    np.random.seed(7)  # noqa: NPY002
    first, second = corrupted(corruption, 3), corrupted(corruption, 3)
    np.testing.assert_array_equal(pixels(first, 1), pixels(second, 1))
    np.testing.assert_array_equal(pixels(first, -1), pixels(first, len(first) - 1))
    np.testing.assert_array_equal(np.random.random_sample(3), expected)  # noqa: NPY002
    assert not np.array_equal(pixels(first, 1), pixels(corrupted(corruption, 4), 1))
    assert not np.array_equal(pixels(first, 1), pixels(corrupted(corruption, 3, seed=1), 1))


def test_compatibility_layer_touches_only_imagecorruptions() -> None:
    corrupted("fog", 1)[0]  # imports imagecorruptions and patches it
    import skimage.filters
    import skimage.util
    from imagecorruptions import corruptions

    assert corruptions.np.float_ is np.float64 and corruptions.np.uint8 is np.uint8
    assert not hasattr(np, "float_")
    image = np.random.default_rng(0).random((16, 16, 3))
    np.testing.assert_array_equal(
        corruptions.gaussian(image, sigma=1.5, multichannel=True),
        skimage.filters.gaussian(image, sigma=1.5, channel_axis=-1),
    )
    assert skimage.util.random_noise is not corruptions.sk.util.random_noise
    assert corruptions.sk.color is skimage.color


def test_corrupted_split_labels_transform_and_arguments() -> None:
    dataset = SyntheticCorrupted(config(), "snow", 2)
    assert len(dataset) == 24 and dataset.targets == SyntheticShapes(config(), "val").targets
    image, label = dataset[5]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert label == 5 and image.min() < -0.5  # normalised by the ImageNet mean and std
    with pytest.raises(ValueError, match=r"gaussian_noise.*got 'blur'"):
        SyntheticCorrupted(config(), "blur", 1)
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match=rf"1\.\.5, got {severity!r}"):
            SyntheticCorrupted(config(), "fog", severity)
    with pytest.raises(ValueError, match="must not be resized"):
        SyntheticCorrupted(
            config(), "fog", 1, transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
        )


# ------------------------------------------------------------------------------------------------ VOC


@pytest.mark.parametrize(("size", "width"), [(64, 1), (128, 1), (256, 3)])
def test_label_maps_match_the_masks_with_a_thin_void_border(size: int, width: int) -> None:
    dataset = SyntheticSegmentation(config(image_size=size, val_per_class=2))
    val = SyntheticShapes(config(image_size=size, val_per_class=2), "val")
    assert dataset.classes == ["background", *val.classes] and len(dataset) == len(val)
    assert dataset.void_width == width
    window = np.ones((2 * width + 1,) * 2, dtype=bool)
    for i in range(len(dataset)):
        image, labels = dataset[i]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert labels.shape == (size, size) and labels.dtype == torch.int64
        labels, mask = labels.numpy(), val.mask(i)
        assert set(np.unique(labels)) == {0, val.targets[i] + 1, VOC_VOID}
        # the objects keep all their pixels; void is the background within `width` px of them
        np.testing.assert_array_equal(labels == val.targets[i] + 1, mask)
        np.testing.assert_array_equal(labels == VOC_VOID, ndimage.binary_dilation(mask, window) & ~mask)
        assert (labels == VOC_VOID).mean() < 0.15


def test_segmentation_transform_and_resize_check() -> None:
    dataset = SyntheticSegmentation(config(), transform=np.asarray)
    image, labels = dataset[3]
    np.testing.assert_array_equal(image, pixels(SyntheticShapes(config(), "val"), 3))
    np.testing.assert_array_equal(labels.numpy(), dataset.label_map(3))
    with pytest.raises(ValueError, match="must not be resized"):
        SyntheticSegmentation(config(), transforms.CenterCrop(48))


def test_the_hard_objects_follow_the_clean_splits_size_range() -> None:
    """The hard split draws its object from the lower part of the clean objects' range (10-67 % of
    min_object-max_object), so larger clean objects give larger hard ones, never above that part."""

    def extents(low: float, high: float) -> np.ndarray:
        hard = SyntheticHard(config(min_object=low, max_object=high))
        boxes = []
        for i in range(len(hard)):
            rows, cols = np.nonzero(hard.mask(i))
            boxes.append(max(np.ptp(rows), np.ptp(cols)) + 1)
        return np.array(boxes) / 64

    small, large = extents(0.15, 0.45), extents(0.4, 0.8)
    assert large.mean() > 1.5 * small.mean()
    assert small.max() <= 0.15 + 2 / 3 * 0.3 + 2 / 64 and large.max() <= 0.4 + 2 / 3 * 0.4 + 2 / 64


def test_local_stand_ins_are_sized_by_their_error_and_the_val_split_by_its_own():
    """At local scale an evaluation reads 500 hard images per class (ImageNet-A's stand-in covers every
    other class: 2,500), 40 per class of VOC's and 20 of ImageNet-C's; the val split keeps its 240."""
    from harness.config import RECIPES_DIR
    from harness.core.data import synthetic_config
    from harness.recipe import load_recipe

    _, runs = load_recipe(RECIPES_DIR / "table5.yaml", ["scale=local"])
    cfg = next(r.config for r in runs if r.config.engine == "evaluate")
    assert synthetic_config(cfg).val_per_class == 240
    sizes = {
        name: synthetic_config(cfg, name).val_per_class for name in ("imagenet_a", "voc2012", "imagenet_c")
    }
    assert sizes == {"imagenet_a": 500, "voc2012": 40, "imagenet_c": 20}
    assert len(stand_in("imagenet_a", synthetic_config(cfg, "imagenet_a"))) == 2500
