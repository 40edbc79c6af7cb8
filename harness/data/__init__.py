"""Datasets of the harness: ImageNet-1k and ImageNet-100 read from disk, and an in-memory synthetic set that
stands in for them at `scale=local`, all built through one registry (`build_dataset`)."""

from harness.data.registry import (
    DATASETS,
    IMAGENET100_WNIDS,
    DatasetNotFoundError,
    DatasetSpec,
    LabeledSubset,
    build_dataset,
    check_available,
    dataset_spec,
    stratified_fraction,
)
from harness.data.synthetic import SyntheticConfig, SyntheticShapes

__all__ = [
    "DATASETS",
    "IMAGENET100_WNIDS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "LabeledSubset",
    "SyntheticConfig",
    "SyntheticShapes",
    "build_dataset",
    "check_available",
    "dataset_spec",
    "stratified_fraction",
]
