"""Datasets of the harness: ImageNet-1k and ImageNet-100 read from disk, the transfer sets of Tab. 4
(CIFAR-10/100, Flowers102, Pets), the evaluation-only ImageNet-A, ImageNet-C and PASCAL VOC 2012
segmentation val (Tabs. 5, 6), and an in-memory synthetic set that stands in for them at `scale=local`,
all built through one registry (`build_dataset`)."""

from harness.data.registry import (
    DATASETS,
    EVALUATION_ONLY,
    IMAGENET100_WNIDS,
    OFFICIAL_SIZES,
    DatasetNotFoundError,
    DatasetSpec,
    LabeledSubset,
    build_dataset,
    check_available,
    dataset_spec,
    stratified_fraction,
)
from harness.data.standins import SyntheticCorrupted, SyntheticHard, SyntheticSegmentation, stand_in
from harness.data.synthetic import SyntheticConfig, SyntheticShapes
from harness.data.transfer import (
    IMAGENET_C_CORRUPTIONS,
    IMAGENET_C_EXTRA_CORRUPTIONS,
    IMAGENET_C_SEVERITIES,
    VOC_CLASSES,
    VOC_SIZE,
    VOC_VOID,
    VOCSegmentationVal,
    imagenet_a_wnids,
    imagenet_c_transform,
    imagenet_wnids,
)

__all__ = [
    "DATASETS",
    "EVALUATION_ONLY",
    "IMAGENET100_WNIDS",
    "IMAGENET_C_CORRUPTIONS",
    "IMAGENET_C_EXTRA_CORRUPTIONS",
    "IMAGENET_C_SEVERITIES",
    "OFFICIAL_SIZES",
    "VOC_CLASSES",
    "VOC_SIZE",
    "VOC_VOID",
    "DatasetNotFoundError",
    "DatasetSpec",
    "LabeledSubset",
    "SyntheticConfig",
    "SyntheticCorrupted",
    "SyntheticHard",
    "SyntheticSegmentation",
    "SyntheticShapes",
    "VOCSegmentationVal",
    "build_dataset",
    "check_available",
    "dataset_spec",
    "imagenet_a_wnids",
    "imagenet_c_transform",
    "imagenet_wnids",
    "stand_in",
    "stratified_fraction",
]
