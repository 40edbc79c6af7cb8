"""The dataset registry: which datasets the harness knows, where each is expected on disk, and loaders that
fail early with a message saying what to fix, since nothing can be downloaded for the user."""

import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch.utils.data
from torchvision.datasets import ImageFolder

from harness.data.synthetic import SyntheticConfig, SyntheticShapes, check_split

Transform = Callable[[Any], Any]


class DatasetNotFoundError(FileNotFoundError):
    """A real dataset is missing or incomplete on disk; the message says what was expected and where."""


@dataclass(frozen=True)
class DatasetSpec:
    """What `python -m harness list` shows for one dataset."""

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
        f"Set {config_key}=/path/to/imagenet, or run at scale=local to use the built-in synthetic dataset "
        f"instead."
    )


def _class_folders(directory: Path) -> set[str]:
    with os.scandir(directory) as entries:
        return {entry.name for entry in entries if entry.is_dir()}


def check_available(name: str, root: str | os.PathLike[str] | None, config_key: str = "data.root") -> None:
    """Raise `DatasetNotFoundError` unless `name` can be read from `root`, before any training starts.

    For ImageNet layouts both splits must hold class folders; for imagenet100 all its 100 class folders
    must be present in both. The synthetic dataset needs no files and always passes.
    """
    dataset_spec(name)
    if name == "synthetic":
        return
    if root is None:
        raise _not_found(name, "no dataset root was given", None, config_key)
    folders: dict[Path, set[str]] = {}
    for split in ("train", "val"):
        directory = Path(root).expanduser() / split
        if not directory.is_dir():
            raise _not_found(name, f"the {split} split folder does not exist", directory, config_key)
        folders[directory] = _class_folders(directory)
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


class _WnidFolder(ImageFolder):
    """An ImageFolder restricted to given class folders, labelled 0.. in sorted order, ignoring the rest."""

    def __init__(self, root: Path, wnids: Sequence[str], transform: Transform | None):
        self._wnids = sorted(wnids)
        super().__init__(root, transform=transform)

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        return list(self._wnids), {wnid: i for i, wnid in enumerate(self._wnids)}


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
) -> torch.utils.data.Dataset:
    """The `split` ("train" / "val") of dataset `name`, with `.targets` and `.classes`.

    `fraction` < 1 keeps a stratified random part of the train split only (`stratified_fraction`); val is
    always whole, so results at any fraction are measured on the same test set. `synthetic` configures the
    synthetic dataset (defaults otherwise) and is ignored for the real ones; `root` is ignored for it.
    """
    dataset_spec(name)
    check_split(split)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    dataset: torch.utils.data.Dataset
    if name == "synthetic":
        dataset = SyntheticShapes(synthetic or SyntheticConfig(), split, transform)
    else:
        check_available(name, root)
        directory = Path(root).expanduser() / split
        try:
            if name == "imagenet100":
                dataset = _WnidFolder(directory, IMAGENET100_WNIDS, transform)
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
