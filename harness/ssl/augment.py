"""The pre-training augmentations of each method's own code, written for any crop size: MoCo-v3's two
asymmetric views (`main_moco.py`, BYOL's recipe) and DINO's multi-crop (`DataAugmentationDINO`); the linear
probes' RandomResizedCrop + flip is the core's transform under the probe protocols. Both codes draw the
blur radius from one range, in pixels, for every crop whatever its size (`utils.GaussianBlur`'s 0.1-2.0 in
DINO, `GaussianBlur([.1, 2.])` in MoCo-v3): the protocol's `blur_radius`. Every random draw comes from the
global generators, which `SeededDataset` seeds per sample."""

import random
from collections.abc import Callable

from PIL import Image, ImageFilter
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import transforms as T

BICUBIC = T.InterpolationMode.BICUBIC


class Blur:
    """PIL's Gaussian blur with probability `p` and a radius drawn uniformly in `radius` (both codes)."""

    def __init__(self, p: float, radius: tuple[float, float]) -> None:
        self.p, self.radius = p, radius

    def __call__(self, image: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.radius)))


def _normalize() -> T.Compose:
    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)])


def _color() -> list[Callable]:
    """Colour jitter (0.4, 0.4, 0.2, 0.1) with p = 0.8, then grayscale with p = 0.2: both codes."""
    return [T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(p=0.2)]


class TwoViews:
    """MoCo-v3's views: view 1 always blurred, view 2 blurred with p = 0.1 and solarized with p = 0.2."""

    def __init__(self, size: int, crop_min: float, blur_radius: tuple[float, float]) -> None:
        crop = T.RandomResizedCrop(size, scale=(crop_min, 1.0))  # bilinear: torchvision's default
        radius = tuple(blur_radius)
        self.first = T.Compose([crop, *_color(), Blur(1.0, radius), T.RandomHorizontalFlip(), _normalize()])
        solarize = T.RandomApply([T.RandomSolarize(128, p=1.0)], p=0.2)
        self.second = T.Compose(
            [crop, *_color(), Blur(0.1, radius), solarize, T.RandomHorizontalFlip(), _normalize()]
        )

    def __call__(self, image: Image.Image) -> list:
        return [self.first(image), self.second(image)]


class MultiCrop:
    """DINO's crops: two global crops (the first always blurred, the second blurred with p = 0.1 and
    solarized with p = 0.2) and `local_number` small crops (blurred with p = 0.5), in that order."""

    def __init__(
        self,
        global_size: int,
        global_scale: tuple[float, float],
        local_size: int,
        local_scale: tuple[float, float],
        local_number: int,
        blur_radius: tuple[float, float],
    ) -> None:
        flip_and_color = [T.RandomHorizontalFlip(p=0.5), *_color()]
        crop = T.RandomResizedCrop(global_size, scale=tuple(global_scale), interpolation=BICUBIC)
        radius = tuple(blur_radius)
        self.global1 = T.Compose([crop, *flip_and_color, Blur(1.0, radius), _normalize()])
        self.global2 = T.Compose(
            [crop, *flip_and_color, Blur(0.1, radius), T.RandomSolarize(128, p=0.2), _normalize()]
        )
        small = T.RandomResizedCrop(local_size, scale=tuple(local_scale), interpolation=BICUBIC)
        self.local = T.Compose([small, *flip_and_color, Blur(0.5, radius), _normalize()])
        self.local_number = local_number

    def __call__(self, image: Image.Image) -> list:
        return [
            self.global1(image),
            self.global2(image),
            *(self.local(image) for _ in range(self.local_number)),
        ]
