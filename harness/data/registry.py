"""The dataset registry: which datasets the harness knows, where each is expected on disk, and loaders that
fail early with a message saying what to fix, since nothing can be downloaded for the user.

Splits are "train" and "val". For the transfer sets "val" is the official test split that Tabs. 3 and 4
report on (Cars cars_test, DomainNet <domain>_test.txt, CIFAR test batches, Flowers tstid, Pets test.txt);
imagenet_a, imagenet_c and voc2012 are evaluation only and have "val" alone. The readers of the transfer
and robustness sets are in `harness.data.transfer`.
"""

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch.utils.data
from torchvision.datasets import ImageFolder

from harness.data import ade20k, transfer
from harness.data.synthetic import SyntheticConfig, SyntheticShapes, check_split

Transform = Callable[[Any], Any]


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is missing or incomplete on disk; the message says what was expected and where."""


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset the harness knows: classes, what it is, its on-disk layout (shown when it is missing)."""

    name: str
    num_classes: int
    description: str
    layout: str


_IMAGENET_LAYOUT = (
    "<root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/* (one folder per class named by its wnid, e.g. "
    "n01440764; the official val archive is flat and must first be sorted into class folders)"
)

# ImageNet-100 of Tian, Krishnan & Isola, "Contrastive Multiview Coding" (2020), in the order of their list
IMAGENET100_WNIDS: tuple[str, ...] = tuple(
    resources.files("harness.data").joinpath("imagenet100.txt").read_text().split()
)

# The official size of each split; a different count is warned about (a partly extracted archive).
OFFICIAL_SIZES = {  # images per split: checked when a transfer set is loaded, used by the cost estimates
    ("imagenet1k", "train"): 1_281_167,
    ("imagenet1k", "val"): 50_000,
    ("imagenet100", "train"): 126_689,
    ("imagenet100", "val"): 5_000,
    ("cifar10", "train"): 50_000,
    ("cifar10", "val"): 10_000,
    ("cifar100", "train"): 50_000,
    ("cifar100", "val"): 10_000,
    ("flowers102", "train"): 2_040,
    ("flowers102", "val"): 6_149,
    ("pets", "train"): 3_680,
    ("pets", "val"): 3_669,
    ("stanford_cars", "train"): 8_144,
    ("stanford_cars", "val"): 8_041,
    ("domainnet_clipart", "train"): 33_525,
    ("domainnet_clipart", "val"): 14_604,
    ("domainnet_painting", "train"): 50_416,
    ("domainnet_painting", "val"): 21_850,
    ("domainnet_sketch", "train"): 48_212,
    ("domainnet_sketch", "val"): 20_916,
    ("imagenet_a", "val"): 7_500,
    ("imagenet_c", "val"): 50_000,
    ("voc2012", "val"): 1_449,
    ("ade20k", "train"): 20_210,
    ("ade20k", "val"): 2_000,
}

# Tab. 3's DomainNet domains, one dataset each (a recipe row names its dataset by one name)
_DOMAINNET = {f"domainnet_{domain}": domain for domain in transfer.DOMAINNET_DOMAINS}


def _domainnet_spec(name: str) -> DatasetSpec:
    """The entry of one DomainNet domain: the three differ in their names and sizes only."""
    domain = _DOMAINNET[name]
    return DatasetSpec(
        name,
        transfer.DOMAINNET_CLASSES,
        f"DomainNet (cleaned) {domain.capitalize()} (Tab. 3), 345 classes: {domain}_train.txt "
        f"({OFFICIAL_SIZES[name, 'train']:,}) / {domain}_test.txt ({OFFICIAL_SIZES[name, 'val']:,}) as val, "
        "labels from the lists",
        f"<root>/{domain}/<class name>/*.jpg with the official lists <root>/{domain}_train.txt and "
        f"<root>/{domain}_test.txt (lines '{domain}/<class name>/<file>.jpg <label 0..344>'; the labels "
        "are taken from the lists, not from the folders)",
    )


DATASETS: dict[str, DatasetSpec] = {
    "imagenet1k": DatasetSpec(
        "imagenet1k", 1000, "ImageNet-1k (ILSVRC-2012): 1.28M train / 50k val images", _IMAGENET_LAYOUT
    ),
    "imagenet100": DatasetSpec(
        "imagenet100",
        100,
        "ImageNet-100: the 100 ImageNet classes of CMC (Tian et al. 2020), read from a full ImageNet root",
        _IMAGENET_LAYOUT,
    ),
    "synthetic": DatasetSpec(
        "synthetic",
        SyntheticConfig().num_classes,
        "Procedural shapes on clutter, generated in memory (no download); the stand-in at scale=local",
        "",
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        10,
        "CIFAR-10 (Tab. 4): 50k train / 10k test (val) images of 32 px",
        "<root>/cifar-10-batches-py/{data_batch_1..data_batch_5, test_batch, batches.meta} (torchvision's "
        "python-batch pickles: dicts with 'data' uint8 [N, 3072] and 'labels')",
    ),
    "cifar100": DatasetSpec(
        "cifar100",
        100,
        "CIFAR-100 (Tab. 4), fine labels: 50k train / 10k test (val) images of 32 px",
        "<root>/cifar-100-python/{train, test, meta} (torchvision's python-batch pickles: dicts with 'data' "
        "uint8 [N, 3072] and 'fine_labels')",
    ),
    "flowers102": DatasetSpec(
        "flowers102",
        102,
        "Oxford Flowers102 (Tab. 4): train = trnid + valid (2,040), val = tstid (6,149), as SAR's code",
        "<root>/flowers-102/{jpg/image_00001.jpg ..., imagelabels.mat, setid.mat} (torchvision's layout; "
        "labels 1..102 in imagelabels.mat, the trnid/valid/tstid lists in setid.mat)",
    ),
    "pets": DatasetSpec(
        "pets",
        37,
        "Oxford-IIIT Pets (Tab. 4), 37 breeds: trainval (3,680) / test (3,669) as val",
        "<root>/oxford-iiit-pet/{images/*.jpg, annotations/trainval.txt, annotations/test.txt} "
        "(torchvision's layout; list lines '<image id> <class 1..37> <species> <breed id>')",
    ),
    "stanford_cars": DatasetSpec(
        "stanford_cars",
        transfer.CARS_CLASSES,
        "Stanford Cars (Tab. 3), 196 classes: 8,144 train / 8,041 test (val) images",
        "<root>/stanford_cars/{cars_train/*.jpg, cars_test/*.jpg, devkit/cars_meta.mat, "
        "devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat} (torchvision's layout; each record of "
        "the 'annotations' struct array has 'fname' and 'class' 1..196; cannot be downloaded any more)",
    ),
    **{name: _domainnet_spec(name) for name in _DOMAINNET},
    "imagenet_a": DatasetSpec(
        "imagenet_a",
        200,
        "ImageNet-A (Tab. 5), evaluation only: 7,500 images of 200 ImageNet classes, in timm's list order",
        "<root>/<wnid>/*.jpg, one folder for each of the 200 ImageNet-A classes (<root> is the extracted "
        "imagenet-a folder)",
    ),
    "imagenet_c": DatasetSpec(
        "imagenet_c",
        1000,
        "ImageNet-C (Tab. 5), evaluation only: 15 corruptions x severities 1..5, 50k images of 224 px each; "
        "build one with corruption= and severity=",
        "<root>/<corruption>/<severity 1..5>/<wnid>/*.JPEG for the 15 corruptions "
        f"({', '.join(transfer.IMAGENET_C_CORRUPTIONS)}), with the 1000 ImageNet class folders in each",
    ),
    "voc2012": DatasetSpec(
        "voc2012",
        len(transfer.VOC_CLASSES),
        "PASCAL VOC 2012 segmentation val (Tabs. 6, 9b), evaluation only: 1,449 images with label maps "
        "(0 background, 1..20 classes, 255 void)",
        "<root>/VOCdevkit/VOC2012/{JPEGImages/*.jpg, SegmentationClass/*.png, "
        "ImageSets/Segmentation/val.txt}",
    ),
    "ade20k": DatasetSpec(
        "ade20k",
        ade20k.CLASSES,
        "ADE20K SceneParsing (Tab. 12): 20,210 train / 2,000 val images with label maps of 150 classes "
        "(0 'other' ignored, 1..150 -> 0..149); items are transform(image, label map) pairs",
        "<root>/ADEChallengeData2016/{images,annotations}/{training,validation}/ (mmseg's layout: *.jpg "
        "images, *.png label maps of the same name)",
    ),
}

# Datasets with a "val" split only: they are never trained on.
EVALUATION_ONLY = frozenset({"imagenet_a", "imagenet_c", "voc2012"})

# What `<config key>=` should point at, for the error messages.
_ROOT_HINTS = {
    "imagenet1k": "/path/to/imagenet",
    "imagenet100": "/path/to/imagenet",
    "cifar10": "/path/to/the/folder/holding/cifar-10-batches-py",
    "cifar100": "/path/to/the/folder/holding/cifar-100-python",
    "flowers102": "/path/to/the/folder/holding/flowers-102",
    "pets": "/path/to/the/folder/holding/oxford-iiit-pet",
    "stanford_cars": "/path/to/the/folder/holding/stanford_cars",
    **dict.fromkeys(_DOMAINNET, "/path/to/domainnet"),
    "imagenet_a": "/path/to/imagenet-a",
    "imagenet_c": "/path/to/imagenet-c",
    "voc2012": "/path/to/the/folder/holding/VOCdevkit",
    "ade20k": "/path/to/the/folder/holding/ADEChallengeData2016",
}

_LAYOUT_CHECKS: dict[str, Callable[[Path], None]] = {
    "cifar10": lambda root: transfer.check_cifar("cifar10", root),
    "cifar100": lambda root: transfer.check_cifar("cifar100", root),
    "flowers102": transfer.check_flowers,
    "pets": transfer.check_pets,
    "stanford_cars": transfer.check_cars,
    **{name: partial(transfer.check_domainnet, domain) for name, domain in _DOMAINNET.items()},
    "imagenet_a": transfer.check_imagenet_a,
    "imagenet_c": transfer.check_imagenet_c,
    "voc2012": transfer.check_voc,
    "ade20k": ade20k.check_layout,
}


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry of `name`; the error lists the known names, so a typo is easy to fix."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def _not_found(name: str, problem: str, looked_at: Path | None, config_key: str) -> DatasetNotFoundError:
    where = f"Looked at: {looked_at}. " if looked_at is not None else ""
    return DatasetNotFoundError(
        f"dataset {name!r}: {problem}. Expected layout: {DATASETS[name].layout}. {where}"
        f"Set {config_key}={_ROOT_HINTS.get(name, '/path/to/' + name)}, or run at scale=local to use the "
        f"built-in synthetic dataset instead."
    )


def check_available(name: str, root: str | os.PathLike[str] | None, config_key: str = "data.root") -> None:
    """Raise `DatasetNotFoundError` unless `name` can be read from `root`, before any training starts.

    For ImageNet layouts both splits must hold class folders; for imagenet100 all its 100 class folders
    must be present in both. The synthetic dataset needs no files and always passes. The others must have
    the files and folders of their layout (`DATASETS[name].layout`): imagenet_a all its 200 class folders,
    imagenet_c all 15 x 5 (corruption, severity) folders, each with class folders. File contents are checked
    when the dataset is built.
    """
    dataset_spec(name)
    if name == "synthetic":
        return
    if root is None:
        raise _not_found(name, "no dataset root was given", None, config_key)
    if name in _LAYOUT_CHECKS:
        try:
            _LAYOUT_CHECKS[name](Path(root).expanduser())
        except transfer.LayoutError as error:
            raise _not_found(name, error.problem, error.path, config_key) from None
        return
    folders: dict[Path, set[str]] = {}
    for split in ("train", "val"):
        directory = Path(root).expanduser() / split
        if not directory.is_dir():
            raise _not_found(name, f"the {split} split folder does not exist", directory, config_key)
        folders[directory] = transfer.class_folders(directory)
        if not folders[directory]:
            raise _not_found(name, f"the {split} split folder holds no class folders", directory, config_key)
    if name == "imagenet100":
        for directory, present in folders.items():
            missing = [wnid for wnid in IMAGENET100_WNIDS if wnid not in present]
            if missing:
                raise _not_found(
                    name,
                    f"{len(missing)} of its 100 class folders are missing from the {directory.name} split "
                    f"(e.g. {', '.join(missing[:5])})",
                    directory,
                    config_key,
                )


class LabeledSubset(torch.utils.data.Subset):
    """A `Subset` that keeps the `targets` and `classes` that samplers and evaluation code read."""

    def __init__(self, dataset: torch.utils.data.Dataset, indices: Sequence[int]):
        super().__init__(dataset, indices)
        self.targets: list[int] = [dataset.targets[i] for i in indices]
        self.classes: list[str] = dataset.classes


def stratified_fraction(dataset: torch.utils.data.Dataset, fraction: float, seed: int) -> LabeledSubset:
    """Keep `round(fraction * n)` items of every class (at least one), drawn with `default_rng(seed)`, in
    their original order: a smaller train set with the class balance of the full one."""
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    kept = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        count = max(1, math.floor(fraction * len(members) + 0.5))  # half up, not Python's half-to-even
        kept.append(rng.choice(members, size=count, replace=False))
    return LabeledSubset(dataset, np.sort(np.concatenate(kept)).tolist())


def build_dataset(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None,
    transform: Transform | None = None,
    *,
    fraction: float = 1.0,
    fraction_seed: int = 0,
    synthetic: SyntheticConfig | None = None,
    corruption: str | None = None,
    severity: int | None = None,
    size: int | tuple[int, int] | None = None,
) -> torch.utils.data.Dataset:
    """The `split` ("train" / "val") of dataset `name`, with `.targets` and `.classes`.

    `fraction` < 1 keeps a stratified random part of the train split only (`stratified_fraction`); val is
    always whole, so results at any fraction are measured on the same test set. `synthetic` configures the
    synthetic dataset (defaults otherwise) and is ignored for the real ones; `root` is ignored for it.

    The evaluation-only sets (`EVALUATION_ONLY`) have split "val" only:

    - imagenet_a: labels 0..199 in ImageNet-A's class order (`imagenet_a_wnids()`).
    - imagenet_c: one (`corruption`, `severity` 1..5) split, e.g. `build_dataset("imagenet_c", "val", root,
      corruption="fog", severity=3)`, labelled by ImageNet-1k index. Only that split's folder is checked
      (`check_available` checks all 15 x 5). `transform` defaults to `imagenet_c_transform()` (to-tensor +
      normalise) and must not resize or crop: the images are already 224 px.
    - voc2012: items are (image, int64 [H, W] label map: 0 background, 1..20 classes, 255 void), both
      resized to `size` (an int is a square; default 480 x 480, Tab. 6), the image bilinearly and then
      through `transform` (default: to-tensor + normalise), the labels with nearest neighbour.
    """
    dataset_spec(name)
    check_split(split)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if name in EVALUATION_ONLY and split != "val":
        raise ValueError(f"dataset {name!r} is for evaluation only: it has a 'val' split only, got {split!r}")
    if name != "imagenet_c" and (corruption is not None or severity is not None):
        raise ValueError(f"corruption= and severity= are for imagenet_c only, not {name!r}")
    if name != "voc2012" and size is not None:
        raise ValueError(f"size= is for voc2012 only, not {name!r}")
    dataset: torch.utils.data.Dataset
    if name == "synthetic":
        dataset = SyntheticShapes(synthetic or SyntheticConfig(), split, transform)
    elif name in _LAYOUT_CHECKS:
        dataset = _build_transfer(name, split, root, transform, corruption, severity, size)
    else:
        check_available(name, root)
        directory = Path(root).expanduser() / split
        try:
            if name == "imagenet100":
                dataset = transfer.WnidFolder(directory, sorted(IMAGENET100_WNIDS), transform)
            else:
                dataset = ImageFolder(directory, transform=transform)
        except FileNotFoundError as error:  # a class folder without a single readable image
            raise _not_found(name, str(error).strip(), directory, "data.root") from error
        expected = DATASETS[name].num_classes
        if len(dataset.classes) != expected:
            warnings.warn(
                f"dataset {name!r}: found {len(dataset.classes)} class folders in {directory}, expected "
                f"{expected}",
                stacklevel=2,
            )
    if split == "train" and fraction < 1:
        return stratified_fraction(dataset, fraction, fraction_seed)
    return dataset


def _build_transfer(
    name: str,
    split: str,
    root: str | os.PathLike[str] | None,
    transform: Transform | None,
    corruption: str | None,
    severity: int | None,
    size: int | tuple[int, int] | None,
) -> torch.utils.data.Dataset:
    """The reader of `harness.data.transfer` for `name`, its layout checked first; malformed content is
    reported as a `DatasetNotFoundError` too."""
    if name == "imagenet_c":
        corruption, severity = transfer.check_imagenet_c_corruption(corruption, severity)
        transfer.check_no_resize(transform)
        if root is None:
            raise _not_found(name, "no dataset root was given", None, "data.root")
    else:
        check_available(name, root)
    path = Path(root).expanduser()
    dataset: torch.utils.data.Dataset
    try:
        if name in ("cifar10", "cifar100"):
            dataset = transfer.CifarBatches(name, path, split, transform)
        elif name == "flowers102":
            dataset = transfer.flowers102(path, split, transform)
        elif name == "pets":
            dataset = transfer.pets(path, split, transform)
        elif name == "stanford_cars":
            dataset = transfer.stanford_cars(path, split, transform)
        elif name in _DOMAINNET:
            dataset = transfer.domainnet(_DOMAINNET[name], path, split, transform)
        elif name == "imagenet_a":
            dataset = transfer.imagenet_a(path, transform)
        elif name == "ade20k":
            dataset = ade20k.ADE20K(path, split, transform)
        elif name == "imagenet_c":
            transfer.check_imagenet_c_split(path, corruption, severity)  # this split only, not all 75
            dataset = transfer.imagenet_c(path, corruption, severity, transform)
        else:
            dataset = transfer.VOCSegmentationVal(
                path, transfer.VOC_SIZE if size is None else size, transform
            )
        if len(dataset) == 0:
            raise transfer.LayoutError(f"the {split} split holds no images", path)
    except transfer.LayoutError as error:
        raise _not_found(name, error.problem, error.path, "data.root") from None
    except FileNotFoundError as error:  # a class folder without a single readable image
        raise _not_found(name, str(error).strip(), path, "data.root") from error
    where = f" ({corruption}/{severity})" if name == "imagenet_c" else ""
    if name == "imagenet_c":
        found = len(set(dataset.targets))
        if found != 1000:
            warnings.warn(
                f"dataset {name!r}{where}: found {found} of the 1000 ImageNet class folders with images in "
                f"{path / corruption / str(severity)}",
                stacklevel=3,
            )
    official = OFFICIAL_SIZES[name, split]
    if len(dataset) != official:
        warnings.warn(
            f"dataset {name!r}{where}: the {split} split holds {len(dataset)} images, the official one "
            f"{official}",
            stacklevel=3,
        )
    return dataset
