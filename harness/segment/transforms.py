"""The pipelines of PVT's `fpn_pvt_s_ade20k_40k.py` (mmseg v0.13), on an (image, label map) pair, in torch.

Training: Resize to `img_scale` (long, short) x a ratio drawn from `ratio_range`, keeping the aspect ratio;
RandomCrop of `crop_size` that retries (up to 10 times) a crop where one class holds `cat_max_ratio` or
more of the labelled pixels; horizontal flip with probability 0.5; PhotoMetricDistortion; normalisation;
padding to the crop size (image 0, labels `ignore_index`) at the bottom and right.
Test: the same keep-ratio resize to `img_scale`, then to the next multiples of `size_divisor` (PVT's
AlignResize); the label map is left at its original size (predictions are resized to it).

Images resize bilinearly (half-pixel centres, no antialiasing: OpenCV's INTER_LINEAR, which mmcv uses),
labels by nearest neighbour (INTER_NEAREST's floor rule); each step rounds to 8 bits as mmcv's uint8
images do. Random draws come from Python's `random`, which the loaders seed per sample
(`harness.core.data.SeededDataset`): a sample's augmentation depends on its key, not on the worker.
"""

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import adjust_hue

MEAN = (123.675, 116.28, 103.53)  # mmseg's img_norm_cfg, RGB
STD = (58.395, 57.12, 57.375)
CROP_TRIES = 10
BRIGHTNESS_DELTA = 32
CONTRAST_RANGE = (0.5, 1.5)
SATURATION_RANGE = (0.5, 1.5)
HUE_DELTA = 18  # in OpenCV's 8-bit hue units (180 to the circle)


def as_tensors(image, label) -> tuple[torch.Tensor, torch.Tensor]:
    """A PIL image or uint8 [H, W, 3] array, and a label map, as float [3, H, W] (0-255) and int64 [H, W]."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float()
    labels = torch.as_tensor(np.asarray(label)).long()
    if pixels.shape[1:] != labels.shape:
        raise ValueError(f"image {tuple(pixels.shape[1:])} and labels {tuple(labels.shape)} differ in size")
    return pixels, labels


def rescaled_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's `rescale_size`: the largest factor that fits the long side in max(scale) and the short side in
    min(scale), applied with rounding half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    out = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=False)[0]
    return out.round().clamp(0, 255)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """What `astype(np.uint8)` after `np.clip(0, 255)` keeps."""
    return pixels.clamp(0, 255).floor()


def photometric_distortion(pixels: torch.Tensor) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion: brightness, contrast (first or last), saturation and hue, each applied
    with probability 1/2. Saturation scales HSV's S at fixed hue and value (clipped at full saturation)."""
    if random.randrange(2):
        pixels = _to_uint8(pixels + random.uniform(-BRIGHTNESS_DELTA, BRIGHTNESS_DELTA))
    contrast_last = random.randrange(2) == 0
    if not contrast_last and random.randrange(2):
        pixels = _to_uint8(pixels * random.uniform(*CONTRAST_RANGE))
    if random.randrange(2):
        alpha = random.uniform(*SATURATION_RANGE)
        value = pixels.amax(0, keepdim=True)
        chroma = value - pixels.amin(0, keepdim=True)
        saturation = chroma / value.clamp_min(1)  # HSV's S; 0 for greys and black
        scaled = (alpha * saturation).clamp(max=1)
        factor = torch.where(saturation > 0, scaled / saturation.clamp_min(1e-12), 1.0)
        pixels = _to_uint8(value - (value - pixels) * factor)
    if random.randrange(2):
        shift = random.randrange(-HUE_DELTA, HUE_DELTA)  # numpy's randint(-18, 18): 18 excluded
        pixels = _to_uint8(adjust_hue(pixels / 255, shift / 180) * 255 + 0.5)
    if contrast_last and random.randrange(2):
        pixels = _to_uint8(pixels * random.uniform(*CONTRAST_RANGE))
    return pixels


@dataclass(frozen=True)
class TrainPipeline:
    img_scale: tuple[int, int]  # (long side, short side) before the ratio
    ratio_range: tuple[float, float]
    crop_size: int
    cat_max_ratio: float
    flip_prob: float
    ignore_index: int

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = as_tensors(image, label)
        ratio = random.uniform(*self.ratio_range)
        scale = (int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio))
        size = rescaled_size(*labels.shape, scale)
        pixels, labels = resize_image(pixels, size), resize_labels(labels, size)
        top, left = self.crop_origin(labels)
        window = (slice(top, top + self.crop_size), slice(left, left + self.crop_size))
        pixels, labels = pixels[:, window[0], window[1]], labels[window]
        if random.random() < self.flip_prob:
            pixels, labels = pixels.flip(-1), labels.flip(-1)
        pixels = normalise(photometric_distortion(pixels))
        bottom, right = self.crop_size - labels.shape[0], self.crop_size - labels.shape[1]
        pixels = F.pad(pixels, (0, right, 0, bottom), value=0.0)
        labels = F.pad(labels, (0, right, 0, bottom), value=self.ignore_index)
        return pixels, labels

    def _random_origin(self, labels: torch.Tensor) -> tuple[int, int]:
        margin_h, margin_w = (max(side - self.crop_size, 0) for side in labels.shape)
        return random.randint(0, margin_h), random.randint(0, margin_w)

    def crop_origin(self, labels: torch.Tensor) -> tuple[int, int]:
        """Top-left corner of the crop: redrawn while one class covers `cat_max_ratio` or more of the
        crop's labelled pixels (or only one class is there), at most `CROP_TRIES` times, the last draw
        kept (mmseg's RandomCrop)."""
        origin = self._random_origin(labels)
        if self.cat_max_ratio >= 1:
            return origin
        for _ in range(CROP_TRIES):
            top, left = origin
            crop = labels[top : top + self.crop_size, left : left + self.crop_size]
            counts = torch.bincount(crop[crop != self.ignore_index].flatten())
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                break
            origin = self._random_origin(labels)
        return origin


@dataclass(frozen=True)
class TestPipeline:
    img_scale: tuple[int, int]
    size_divisor: int

    def __call__(self, image, label) -> tuple[torch.Tensor, torch.Tensor]:
        pixels, labels = as_tensors(image, label)
        size = rescaled_size(*labels.shape, self.img_scale)
        pixels = resize_image(pixels, size)
        aligned = tuple(math.ceil(side / self.size_divisor) * self.size_divisor for side in size)
        return normalise(resize_image(pixels, aligned)), labels
