"""`SyntheticShapes`: a procedurally generated classification set that stands in for ImageNet at
`scale=local`, so the whole pipeline (training, SAR loss, evaluation, segmentation-style metrics) runs
without any download.

How classes are formed: a class is a cell (shape family, appearance) of a grid. There are 12 shape
families (disk, square, triangle, star, plus, ring, crescent, L, bar, half-disk, bow-tie, heart) and 180
appearances (one of 45 unordered pairs of 10 palette colours x one of 4 two-colour patterns: stripes,
checks, concentric rings, halves), both painted in the object's own rotated frame. For `k` classes a seed
picks `shapes` shape families (2 by default; more where `k` exceeds 180 per shape, at most 12) and
`ceil(k / n_shapes)` appearances, and the classes fill that grid row by row. Every appearance is therefore
shared by several shapes and every shape by several appearances: neither colours nor the outline alone
names the class, only both together. Up to 12 * 180 = 2160 classes are possible. Two shapes per appearance
is what a ViT learns from scratch in a few hundred steps: with ten classes on a square grid (`shapes=4`,
4 x 3) the outlines within an appearance were still near chance after 16 epochs, while appearances were
all but perfect (docs/local-scale.md, "What moved the Tab. 1 baseline").

An image holds 1-3 objects of its class (random position, rotation, diameter `min_object`-`max_object` of
the side: 40-80 % by default, so that an object fills the frame about as an ImageNet object does and the
protocols' random-resized crops keep some of its outline) on a low-contrast background made of smooth
colour noise, faint lines and small irregular blobs painted with the same palette and patterns as the
objects, chosen independently of the label: the background carries no class information. Objects have hard
edges, so `mask` is exactly the set of painted object pixels.

Everything is a pure function of (seed, split, index): an image is rendered the first time it is asked for
and kept in memory (nothing is written), and a different seed yields a different class-to-appearance
mapping (a different "dataset").
"""

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch.utils.data
from PIL import Image, ImageDraw

_SPLITS = {"train": 0, "val": 1}
_CROWDING = (1.0, 0.38 / 0.45, 0.32 / 0.45)  # the largest diameter of 1, 2, 3 objects, relative
# first SeedSequence word, so that the class-map stream never coincides with an image stream
_CLASS_MAP_TAG = 0x5EED_C1A5
_IMAGE_TAG = 0x5EED_1A6E

_PALETTE = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 220, 40),
    "green": (40, 175, 60),
    "cyan": (40, 205, 215),
    "blue": (35, 75, 225),
    "purple": (130, 55, 200),
    "magenta": (225, 50, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
_COLOUR_NAMES = tuple(_PALETTE)
_COLOURS = np.array(list(_PALETTE.values()), dtype=np.float32)

ShapeFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _regular_polygon(sides: int) -> ShapeFn:
    sector = 2 * math.pi / sides
    apothem = math.cos(math.pi / sides)

    def inside(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        phi = np.arctan2(v, u) + math.pi / 2
        return r * np.cos(phi - sector * np.floor(phi / sector) - sector / 2) <= apothem

    return inside


def _star(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    t = np.arctan2(v, u) * (5 / (2 * math.pi))
    t -= np.floor(t)
    return r <= 0.4 + 0.6 * np.abs(2 * t - 1)


def _heart(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
    x, y = 1.3 * u, 0.15 - 1.3 * v
    return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0


# Shape families in the unit disk of the object frame (u, v, r = hypot(u, v)). They differ in outline even
# under rotation and at ~10 px; pairs that a rotation maps onto each other (square/diamond, plus/x) are out.
_SHAPES: dict[str, ShapeFn] = {
    "disk": lambda u, v, r: r <= 0.9,
    "square": lambda u, v, r: np.maximum(np.abs(u), np.abs(v)) <= 0.72,
    "triangle": _regular_polygon(3),
    "star": _star,
    "plus": lambda u, v, r: (
        ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    ),
    "ring": lambda u, v, r: (r >= 0.5) & (r <= 0.95),
    "crescent": lambda u, v, r: (r <= 0.95) & (np.hypot(u - 0.5, v) > 0.72),
    "L": lambda u, v, r: (
        ((u >= -0.6) & (u <= -0.1) & (np.abs(v) <= 0.75))
        | ((u >= -0.6) & (u <= 0.65) & (v >= 0.25) & (v <= 0.75))
    ),
    "bar": lambda u, v, r: u * u + (v / 0.38) ** 2 <= 0.95,
    "half-disk": lambda u, v, r: (np.hypot(u, v + 0.4) <= 0.95) & (v >= -0.4),
    "bowtie": lambda u, v, r: (np.abs(u) <= 0.9) & (np.abs(v) <= 0.08 + 0.75 * np.abs(u)),
    "heart": _heart,
}
_SHAPE_NAMES = tuple(_SHAPES)


def _band(x: np.ndarray) -> np.ndarray:
    """Index of the unit band each value falls in (floor, as integers: float `%` is slow in numpy)."""
    return np.floor(x).astype(np.int32)


# Two-colour patterns in the object frame, as "use the first colour here"; bands are 0.3-0.4 of the radius,
# so patterns scale with the object; `phase` shifts the bands from object to object.
_PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "stripes": lambda u, v, r, phase: (_band(u / 0.3 + phase) & 1) == 0,
    "checks": lambda u, v, r, phase: ((_band(u / 0.4 + phase) + _band(v / 0.4 + phase)) & 1) == 0,
    "rings": lambda u, v, r, phase: (_band(r / 0.3) & 1) == 0,
    "halves": lambda u, v, r, phase: u >= 0,
}
_PATTERN_NAMES = tuple(_PATTERNS)

# (colour a, colour b, pattern): unordered colour pairs, since swapping a and b gives the same look
_APPEARANCES = tuple(
    (a, b, p)
    for a in range(len(_COLOUR_NAMES))
    for b in range(a + 1, len(_COLOUR_NAMES))
    for p in range(len(_PATTERN_NAMES))
)
MAX_CLASSES = len(_SHAPES) * len(_APPEARANCES)


Render = tuple[np.ndarray, np.ndarray]  # (pixels, foreground mask), read-only
RENDERS_KEPT = 4  # the datasets whose images a process keeps: a local table's runs use a few
_RENDERS: OrderedDict[tuple["SyntheticConfig", str], dict[int, Render]] = OrderedDict()


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and identity of a synthetic dataset; different seeds stand in for different datasets."""

    num_classes: int = 10
    image_size: int = 64
    train_per_class: int = 100
    val_per_class: int = 20
    seed: int = 0
    # the diameter of a lone object, as a fraction of the side; two and three objects are drawn smaller
    min_object: float = 0.4
    max_object: float = 0.8
    shapes: int = 2  # shape families in the class grid (at least ceil(num_classes / 180))

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= MAX_CLASSES:
            raise ValueError(f"num_classes must be in [2, {MAX_CLASSES}], got {self.num_classes}")
        # below 32 px the smallest objects (min_object may be as low as 10 % of the side) are a few pixels
        # and lose their shape
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        if self.train_per_class < 1 or self.val_per_class < 1:
            raise ValueError(
                f"train_per_class and val_per_class must be >= 1, got {self.train_per_class}, "
                f"{self.val_per_class}"
            )
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {self.seed}")
        if not 2 <= self.shapes <= len(_SHAPES):
            raise ValueError(
                f"shapes must be in [2, {len(_SHAPES)}] (one shape would leave the class to the colours "
                f"alone), got {self.shapes}"
            )
        if not 0.1 <= self.min_object <= self.max_object <= 0.9:
            raise ValueError(
                "min_object and max_object must satisfy 0.1 <= min_object <= max_object <= 0.9 (fractions "
                f"of the side), got {self.min_object} and {self.max_object}"
            )


def check_split(split: str) -> None:
    """Reject anything but "train" / "val" early, naming the value."""
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def class_cells(config: SyntheticConfig) -> list[tuple[int, int]]:
    """(shape index, appearance index) of every class: the first `num_classes` cells of a seed-chosen
    shapes x appearances grid, filled row by row, so appearances and shapes are each shared by classes."""
    rng = np.random.default_rng(np.random.SeedSequence([_CLASS_MAP_TAG, config.seed]))
    n_shapes = max(config.shapes, math.ceil(config.num_classes / len(_APPEARANCES)))
    n_appearances = math.ceil(config.num_classes / n_shapes)
    shapes = rng.permutation(len(_SHAPES))[:n_shapes]
    appearances = rng.permutation(len(_APPEARANCES))[:n_appearances]
    return [(int(shapes[c % n_shapes]), int(appearances[c // n_shapes])) for c in range(config.num_classes)]


def _renders(config: SyntheticConfig, split: str) -> dict[int, Render]:
    """The images of (`config`, `split`) this process has rendered, by index, shared by every dataset of them
    (the `RENDERS_KEPT` most recently asked for are kept). The sizes of the splits do not enter: item `i` is
    the same image in a split of any length, so a stand-in of 20 images per class reuses the val split's."""
    key = (dataclasses.replace(config, train_per_class=1, val_per_class=1), split)
    renders = _RENDERS.pop(key, {})
    _RENDERS[key] = renders
    while len(_RENDERS) > RENDERS_KEPT:
        _RENDERS.popitem(last=False)
    return renders


class SyntheticShapes(torch.utils.data.Dataset):
    """The synthetic split: `num_classes * per_class` items, item `i` has label `i % num_classes`.

    `__getitem__` returns `(transform(image), label)` (the PIL RGB image when no transform is given) and
    `mask(i)` the boolean foreground of the same image, for segmentation-style checks of attention maps.
    Each image is rendered once per process and kept (12 KB at 64 px), for every dataset of the same
    images (`_renders`): rendering costs more than a local training step's share of it, every epoch asks for
    every image again, and the runs of a local table, in one process, ask for the same images.
    """

    def __init__(
        self, config: SyntheticConfig, split: str, transform: Callable[[Image.Image], Any] | None = None
    ):
        check_split(split)
        self.config = config
        self.split = split
        self.transform = transform
        self._table = class_cells(config)
        per_class = config.train_per_class if split == "train" else config.val_per_class
        self._length = config.num_classes * per_class
        self._rendered = _renders(config, split)
        self.targets = [i % config.num_classes for i in range(self._length)]
        self.classes = [
            f"{_SHAPE_NAMES[s]}/{_PATTERN_NAMES[_APPEARANCES[a][2]]}/"
            f"{_COLOUR_NAMES[_APPEARANCES[a][0]]}+{_COLOUR_NAMES[_APPEARANCES[a][1]]}"
            for s, a in self._table
        ]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Any, int]:
        pixels, _ = self._render(index)
        image = Image.fromarray(pixels)
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    def mask(self, index: int) -> np.ndarray:
        """Boolean `[image_size, image_size]` map, True exactly on the painted object pixels."""
        return self._render(index)[1]

    def _render(self, index: int) -> Render:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for a split of {self._length} items")
        index %= self._length
        if index not in self._rendered:
            pixels, mask = self._draw(index)
            pixels.flags.writeable = mask.flags.writeable = False  # shared by every later call
            self._rendered[index] = pixels, mask
        return self._rendered[index]

    def _draw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.config.image_size
        rng = np.random.default_rng(
            np.random.SeedSequence([_IMAGE_TAG, self.config.seed, _SPLITS[self.split], index])
        )
        image = clutter_background(rng, size)
        mask = np.zeros((size, size), dtype=bool)
        shape, appearance = self._table[self.targets[index]]
        n_objects = int(rng.integers(1, 4))
        # more objects, smaller (by 0.84 and 0.71 for two and three), so that they stay recognisable
        max_scale = max(self.config.min_object, self.config.max_object * _CROWDING[n_objects - 1])
        placed: list[tuple[float, float, float]] = []
        for _ in range(n_objects):
            radius = size * rng.uniform(self.config.min_object, max_scale) / 2
            for _attempt in range(10):  # keep overlaps moderate, so every object shows its outline
                cx, cy = rng.uniform(radius, size - radius, size=2)
                if all(math.hypot(cx - x, cy - y) > 0.8 * (radius + r) for x, y, r in placed):
                    break
            placed.append((cx, cy, radius))
            colours = _COLOURS[list(_APPEARANCES[appearance][:2])] * rng.uniform(0.85, 1.1, size=(2, 1))
            _paint(image, mask, rng, cx, cy, radius, _SHAPES[_SHAPE_NAMES[shape]], appearance, colours, 1.0)
        image += 5.0 * rng.standard_normal(size=(size, size, 1), dtype=np.float32)  # sensor-like grain
        return np.clip(image, 0, 255).astype(np.uint8), mask


def _paint(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    shape: ShapeFn,
    appearance: int,
    colours: np.ndarray,
    alpha: float,
) -> None:
    """Paint one rotated, patterned shape of `radius` pixels at (cx, cy); mark its pixels in `mask`."""
    size = image.shape[0]
    x0, x1 = max(0, math.floor(cx - radius)), min(size, math.ceil(cx + radius) + 1)
    y0, y1 = max(0, math.floor(cy - radius)), min(size, math.ceil(cy + radius) + 1)
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :] / radius
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None] / radius
    theta = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(theta), math.sin(theta)
    u, v = cos * dx + sin * dy, cos * dy - sin * dx
    r = np.hypot(u, v)
    inside = shape(u, v, r)
    first = _PATTERNS[_PATTERN_NAMES[_APPEARANCES[appearance][2]]](u, v, r, rng.uniform(0, 2))
    paint = np.where(first[inside][:, None], colours[0], colours[1])
    box = image[y0:y1, x0:x1]
    box[inside] = paint if alpha == 1 else (1 - alpha) * box[inside] + alpha * paint
    if mask is not None:
        mask[y0:y1, x0:x1] |= inside


def _blob(harmonics: np.ndarray, phases: np.ndarray) -> ShapeFn:
    """A wobbly disk: irregular enough that it is none of the class shapes."""

    def inside(u: np.ndarray, v: np.ndarray, r: np.ndarray) -> np.ndarray:
        phi = np.arctan2(v, u)
        wobble = harmonics[0] * np.cos(2 * phi + phases[0]) + harmonics[1] * np.cos(3 * phi + phases[1])
        return r <= 0.75 * (1 + wobble)

    return inside


def clutter_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-contrast clutter drawn from every class's palette and patterns, independent of the label."""
    grey = rng.uniform(80, 175)
    cells = int(rng.integers(3, 7))
    tint = _COLOURS[rng.integers(len(_COLOURS), size=(cells, cells))]
    low = (grey + rng.uniform(0.2, 0.35) * (tint - grey)).astype(np.uint8)
    image = np.array(Image.fromarray(low).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):  # faint lines
        canvas = Image.new("1", (size, size))
        ImageDraw.Draw(canvas).line([tuple(p) for p in rng.uniform(0, size, size=(2, 2))], fill=1)
        on = np.asarray(canvas)
        image[on] = 0.6 * image[on] + 0.4 * _COLOURS[rng.integers(len(_COLOURS))]
    for _ in range(int(rng.integers(3, 9))):  # small irregular blobs with the objects' patterns
        blob = _blob(rng.uniform(0, 0.3, size=2), rng.uniform(0, 2 * math.pi, size=2))
        radius = size * rng.uniform(0.03, 0.08)
        cx, cy = rng.uniform(0, size, size=2)
        appearance = int(rng.integers(len(_APPEARANCES)))
        colours = _COLOURS[list(_APPEARANCES[appearance][:2])]
        _paint(image, None, rng, cx, cy, radius, blob, appearance, colours, rng.uniform(0.3, 0.5))
    return image


# For renderings of the same classes under other conditions (harness.data.standins), with `class_cells`,
# `clutter_background` and the painter the splits above use.
APPEARANCE_COUNT = len(_APPEARANCES)


def paint_object(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    cell: tuple[int | None, int],
    alpha: float = 1.0,
    shade: tuple[float, float] = (0.85, 1.1),
) -> None:
    """Paint one object of the (shape, appearance) `cell` as the splits do, at `centre` (x, y) with `radius`
    pixels and opacity `alpha`, its two colours scaled by factors drawn from `shade`; mark its pixels in
    `mask`. Shape None paints an irregular blob like the background's, which is none of the class shapes."""
    shape, appearance = cell
    outline = (
        _blob(rng.uniform(0, 0.3, size=2), rng.uniform(0, 2 * math.pi, size=2))
        if shape is None
        else _SHAPES[_SHAPE_NAMES[shape]]
    )
    colours = _COLOURS[list(_APPEARANCES[appearance][:2])] * rng.uniform(*shade, size=(2, 1))
    _paint(image, mask, rng, *centre, radius, outline, appearance, colours, alpha)
