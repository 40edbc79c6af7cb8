"""Synthetic stand-ins for the evaluation-only datasets, so that Tabs. 5 and 6 run at `scale=local` on
models trained on `SyntheticShapes`, without any download:

- `SyntheticHard` stands in for ImageNet-A (Tab. 5, "natural adversarial examples"): the training classes
  rendered hard (small, washed-out objects, partly hidden behind foreign patches, among faint shapes of the
  other classes), on a subset of the classes (every other one) with labels 0.. in that subset's order, as
  ImageNet-A covers 200 of ImageNet's 1,000 classes; scores restrict the logits to `.class_indices`.
- `SyntheticCorrupted` stands in for ImageNet-C (Tab. 5): the synthetic val split through the
  `imagecorruptions` package (the code that made ImageNet-C), one (corruption, severity) at a time, at the
  images' own size, seeded per image.
- `SyntheticSegmentation` stands in for PASCAL VOC 2012 segmentation val (Tab. 6): the synthetic val split
  with a label map (0 background, label + 1 on the objects, 255 on a thin void border around them, as
  VOC draws its outlines void) to score attention maps by Jaccard index.

`stand_in(name, ...)` builds one by the name of the dataset it replaces ("imagenet_a", "imagenet_c",
"voc2012"). All are pure functions of the config and the index: nothing is cached or written.
"""

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torchvision import transforms as T

from harness.data.synthetic import (
    APPEARANCE_COUNT,
    SyntheticConfig,
    SyntheticShapes,
    class_cells,
    clutter_background,
    paint_object,
)
from harness.data.transfer import (
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    VOC_VOID,
    check_imagenet_c_corruption,
)

Transform = Callable[[Image.Image], Any]

# first SeedSequence words of the stand-ins' own streams, distinct from synthetic.py's tags (and each other)
_HARD_TAG = 0x5EED_4A7D
_CORRUPTION_TAG = 0x5EED_C0DE

# the hard split's rendering: one object in the lower part of the clean splits' size range (its 10th to
# 67th percentile of min_object-max_object: 44-67 % of the side for the default 40-80 %), painted at
# 65-85 % opacity with a wider brightness jitter, 1-2 opaque foreign blobs across it (about a quarter of it
# hidden on average), 4-8 faint small shapes of other classes around, and stronger grain (clean: 5)
_HARD_DIAMETER = (0.1, 2 / 3)
_HARD_ALPHA = (0.65, 0.85)
_HARD_SHADE = (0.70, 1.15)
_HARD_GRAIN = 8.0
_DISTRACTOR_DIAMETER = (0.08, 0.16)
_DISTRACTOR_ALPHA = (0.35, 0.65)


def _to_normalised_tensor() -> T.Compose:
    """To-tensor and ImageNet mean/std only, as the real ImageNet-C and VOC readers default to."""
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _check_no_resize(transform: Any, what: str, size: int) -> None:
    """Reject a transform holding a step named *Resize* or *Crop* (in a Compose or not): `what` must be seen
    at its own `size`."""
    steps = getattr(transform, "transforms", None)
    if isinstance(steps, list | tuple):
        for step in steps:
            _check_no_resize(step, what, size)
        return
    kind = type(transform).__name__
    if "Resize" in kind or "Crop" in kind:
        raise ValueError(
            f"{what} is rendered at image_size = {size} px and must not be resized or cropped, but the "
            f"transform holds {transform!r}"
        )


def _check_index(index: int, length: int) -> int:
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a split of {length} items")
    return index % length


# ---------------------------------------------------------------------------------------------- ImageNet-A


def hard_class_indices(num_classes: int) -> tuple[int, ...]:
    """The training classes the hard split covers: every other one (0, 2, 4, ...), all when there are two."""
    return tuple(range(0, num_classes, 2 if num_classes >= 3 else 1))


class SyntheticHard(torch.utils.data.Dataset):
    """ImageNet-A's stand-in: `val_per_class` hard images of each class in `.class_indices` (sorted indices
    into the training classes), item `i` labelled `i % len(class_indices)`, i.e. training class
    `class_indices[label]`. Items are `(transform(image), label)` (the PIL image when no transform is given);
    `mask(i)` is the object's visible pixels. Drawn from its own stream, independent of train and val."""

    def __init__(self, config: SyntheticConfig, transform: Transform | None = None):
        self.config = config
        self.transform = transform
        self.class_indices = hard_class_indices(config.num_classes)
        self._cells = class_cells(config)
        training_classes = SyntheticShapes(config, "val").classes
        self.classes = [training_classes[c] for c in self.class_indices]
        self._length = len(self.class_indices) * config.val_per_class
        self.targets = [i % len(self.class_indices) for i in range(self._length)]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self._render(index)[0])
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    def mask(self, index: int) -> np.ndarray:
        """Boolean `[image_size, image_size]` map of the object's pixels that no foreign blob hides."""
        return self._render(index)[1]

    def visible_fraction(self, index: int) -> float:
        """The share of the object's painted pixels left visible by the foreign blobs (1 in the clean
        splits), a measure of how hard the item is."""
        _, visible, whole = self._render(index)
        return float(visible.sum() / whole.sum())

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 pixels, visible object mask, whole object mask) of item `index`."""
        index = _check_index(index, self._length)
        size = self.config.image_size
        rng = np.random.default_rng(np.random.SeedSequence([_HARD_TAG, self.config.seed, index]))
        target = self.class_indices[self.targets[index]]
        image = clutter_background(rng, size)
        self._distract(image, rng, target)
        low, high = self.config.min_object, self.config.max_object
        radius = size * rng.uniform(*(low + q * (high - low) for q in _HARD_DIAMETER)) / 2
        cx, cy = rng.uniform(radius, size - radius, size=2)
        whole = np.zeros((size, size), dtype=bool)
        paint_object(
            image, whole, rng, (cx, cy), radius, self._cells[target], rng.uniform(*_HARD_ALPHA), _HARD_SHADE
        )
        hidden = _occlude(image, rng, (cx, cy), radius)
        image += _HARD_GRAIN * rng.standard_normal(size=(size, size, 1), dtype=np.float32)
        return np.clip(image, 0, 255).astype(np.uint8), whole & ~hidden, whole

    def _distract(self, image: np.ndarray, rng: np.random.Generator, target: int) -> None:
        """Faint small shapes of other classes (any training class but `target`), a spurious cue."""
        size = image.shape[0]
        for _ in range(int(rng.integers(4, 9))):
            other = int(rng.integers(self.config.num_classes - 1))
            other += other >= target
            radius = size * rng.uniform(*_DISTRACTOR_DIAMETER) / 2
            centre = tuple(rng.uniform(0, size, size=2))
            paint_object(
                image, None, rng, centre, radius, self._cells[other], rng.uniform(*_DISTRACTOR_ALPHA)
            )


def _occlude(
    image: np.ndarray, rng: np.random.Generator, centre: tuple[float, float], radius: float
) -> np.ndarray:
    """Paint 1-2 opaque blobs of random appearance (no class shape) across the object at `centre`, off its
    centre so that part of it shows; return the pixels they cover."""
    hidden = np.zeros(image.shape[:2], dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        angle, distance = rng.uniform(0, 2 * math.pi), radius * rng.uniform(0.5, 1.0)
        at = (centre[0] + distance * math.cos(angle), centre[1] + distance * math.sin(angle))
        cell = (None, int(rng.integers(APPEARANCE_COUNT)))
        paint_object(image, hidden, rng, at, radius * rng.uniform(0.5, 0.8), cell)
    return hidden


# ---------------------------------------------------------------------------------------------- ImageNet-C

_ALL_CORRUPTIONS = IMAGENET_C_CORRUPTIONS + IMAGENET_C_EXTRA_CORRUPTIONS


class _ModuleView:
    """A module with a few names added or replaced, to stand in for it in another module's globals only."""

    def __init__(self, module: Any, **names: Any):
        self._module = module
        vars(self).update(names)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        setattr(self, name, value)  # later look-ups find it without this call (glass_blur asks per pixel)
        return value


def _make_compatible(corruptions: Any) -> None:
    """Make imagecorruptions 1.1.2 (2019) run, reproducibly, on NumPy 2 and scikit-image 0.26, by swapping
    three names in the globals of its `corruptions` module (numpy and scikit-image stay untouched):
    - `np`: `fog`'s `plasma_fractal` asks for `np.float_`, removed in NumPy 2; a view of numpy answers it
      with `np.float64`, which it was.
    - `gaussian`: `glass_blur` and `gaussian_blur` pass `multichannel=True` to `skimage.filters.gaussian`,
      which scikit-image 0.19 renamed to `channel_axis=-1`; a wrapper translates it.
    - `sk`: `impulse_noise` calls `sk.util.random_noise`, which draws from a fresh unseeded Generator unless
      given `rng`; a wrapper seeds it from numpy's global RNG, like every other corruption's draws."""
    gaussian, random_noise = corruptions.gaussian, corruptions.sk.util.random_noise

    def gaussian_channel_axis(
        image: np.ndarray, *args: Any, multichannel: bool = False, **kwargs: Any
    ) -> Any:
        return gaussian(image, *args, **({"channel_axis": -1} if multichannel else {}), **kwargs)

    def random_noise_global_rng(image: np.ndarray, *args: Any, rng: Any = None, **kwargs: Any) -> Any:
        if rng is None:
            rng = int(np.random.randint(2**32))  # noqa: NPY002
        return random_noise(image, *args, rng=rng, **kwargs)

    corruptions.np = _ModuleView(np, float_=np.float64)
    corruptions.gaussian = gaussian_channel_axis
    corruptions.sk = _ModuleView(
        corruptions.sk, util=_ModuleView(corruptions.sk.util, random_noise=random_noise_global_rng)
    )


@cache
def _corrupt() -> Callable[..., np.ndarray]:
    """imagecorruptions' `corrupt`, imported on first use (it brings OpenCV and scikit-image) and made
    compatible; its import-time deprecation warnings (pkg_resources, scipy.ndimage.interpolation) are
    silenced, as they are the package's to fix."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        warnings.filterwarnings("ignore", ".*scipy.ndimage.interpolation", DeprecationWarning)
        import imagecorruptions
        from imagecorruptions import corruptions
    _make_compatible(corruptions)
    return imagecorruptions.corrupt


@contextmanager
def _global_numpy_rng(entropy: list[int]) -> Iterator[None]:
    """Seed numpy's global RNG (imagecorruptions draws from it) from `entropy`, and give the caller's state
    back afterwards. Not thread-safe, like the global RNG itself; DataLoader workers are processes."""
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(np.random.SeedSequence(entropy).generate_state(8))  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


class SyntheticCorrupted(torch.utils.data.Dataset):
    """ImageNet-C's stand-in for one (corruption, severity): the synthetic val split, each image corrupted
    by imagecorruptions at its own `image_size` (no resize, as ImageNet-C is evaluated), with draws seeded
    by (config.seed, corruption, severity, index). Items are `(transform(image), label)`, the transform
    defaulting to to-tensor + ImageNet mean/std like the real reader's; `.targets`, `.classes` are val's."""

    def __init__(
        self,
        config: SyntheticConfig,
        corruption: str,
        severity: int,
        transform: Transform | None = None,
    ):
        self.corruption, self.severity = check_imagenet_c_corruption(corruption, severity)
        self.transform = _to_normalised_tensor() if transform is None else transform
        _check_no_resize(self.transform, "the ImageNet-C stand-in", config.image_size)
        self.config = config
        self._clean = SyntheticShapes(config, "val")
        self.targets = self._clean.targets
        self.classes = self._clean.classes

    def __len__(self) -> int:
        return len(self._clean)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.transform(Image.fromarray(self.pixels(index))), self.targets[index]

    def pixels(self, index: int) -> np.ndarray:
        """The corrupted uint8 `[image_size, image_size, 3]` image of item `index`."""
        clean, _ = self._clean[index]  # raises IndexError out of range
        index %= len(self)
        corruption = _ALL_CORRUPTIONS.index(self.corruption)
        with _global_numpy_rng([_CORRUPTION_TAG, self.config.seed, corruption, self.severity, index]):
            return _corrupt()(np.asarray(clean), severity=self.severity, corruption_name=self.corruption)


# ------------------------------------------------------------------------------------------------- VOC 2012


def void_border(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels outside `mask` within `width` pixels (Chebyshev distance) of it: a border `width` px wide
    around each object, which leaves every object pixel labelled, so that small objects keep their extent."""
    height, full_width = mask.shape
    padded = np.pad(mask, width)
    grown = np.zeros_like(mask)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            grown |= padded[dy : dy + height, dx : dx + full_width]
    return grown & ~mask


class SyntheticSegmentation(torch.utils.data.Dataset):
    """PASCAL VOC 2012 segmentation val's stand-in: the synthetic val split as (transform(image), int64
    `[H, W]` label map) with 0 background, `label + 1` on the object pixels (VOC's 1..20) and 255 (VOC's
    void) on a border around the objects, as VOC marks its object outlines void. The border is `void_width`
    px wide: about 1 % of the side, as VOC's ~5 px on ~500 px images, and at least 1 px (1 px up to 149 px).
    No resize: the model sees the image at `image_size`. The transform defaults to to-tensor + ImageNet
    mean/std, like the real reader's. `.classes` is "background" then the training classes, indexed by
    label-map value. `split="train"` labels the train split the same way (Tab. 12's local scale trains
    a segmenter on it)."""

    def __init__(self, config: SyntheticConfig, transform: Transform | None = None, split: str = "val"):
        self.transform = _to_normalised_tensor() if transform is None else transform
        _check_no_resize(
            self.transform, "the VOC 2012 stand-in (its label maps are not resized)", config.image_size
        )
        self.config = config
        self._clean = SyntheticShapes(config, split)
        self.classes = ["background", *self._clean.classes]
        self.void_width = max(1, round(config.image_size / 100))

    def __len__(self) -> int:
        return len(self._clean)

    def __getitem__(self, index: int) -> tuple[Any, torch.Tensor]:
        image, _ = self._clean[index]
        return self.transform(image), torch.from_numpy(self.label_map(index))

    def label_map(self, index: int) -> np.ndarray:
        """The int64 `[image_size, image_size]` label map of item `index`."""
        mask = self._clean.mask(index)
        labels = np.where(mask, self._clean.targets[index] + 1, 0)
        labels[void_border(mask, self.void_width)] = VOC_VOID
        return labels.astype(np.int64)


# ------------------------------------------------------------------------------------------------ entry


_STAND_INS = ("imagenet_a", "imagenet_c", "voc2012")


def stand_in(
    name: str,
    synthetic: SyntheticConfig,
    transform: Transform | None = None,
    *,
    corruption: str | None = None,
    severity: int | None = None,
) -> torch.utils.data.Dataset:
    """The synthetic stand-in for the evaluation-only dataset `name` (a `harness.data.DATASETS` key), over
    the classes of `synthetic`: ImageNet-A -> `SyntheticHard`, ImageNet-C (with `corruption`, `severity`)
    -> `SyntheticCorrupted`, VOC 2012 -> `SyntheticSegmentation`."""
    if name not in _STAND_INS:
        raise ValueError(f"no synthetic stand-in for dataset {name!r}; known: {', '.join(_STAND_INS)}")
    if name == "imagenet_c":
        return SyntheticCorrupted(synthetic, corruption, severity, transform)
    if corruption is not None or severity is not None:
        raise ValueError(f"corruption= and severity= are for imagenet_c only, not {name!r}")
    if name == "imagenet_a":
        return SyntheticHard(synthetic, transform)
    return SyntheticSegmentation(synthetic, transform)
