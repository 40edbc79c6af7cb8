"""Evaluation metrics as plain functions, each registered in `METRICS` with a name and a direction:
top-k accuracy, ImageNet-A accuracy and ImageNet-C mCE (Tab. 5), and the Jaccard of thresholded attention
against PASCAL VOC-12 (Tabs. 6 and 9b), and semantic segmentation's mIoU (Tab. 12). Sources: the
project's protocol notes (docs/protocols.md, sections 3, 4 and 6)."""

from harness.eval.classification import (
    imagenet_a_accuracy,
    imagenet_a_indices,
    restrict_to_imagenet_a,
    topk_accuracy,
    topk_correct,
)
from harness.eval.corruption import (
    ALEXNET_ERRORS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    mce,
    mean_corruption_error,
)
from harness.eval.registry import EVALUATIONS, METRICS, Metric
from harness.eval.segmentation import (
    IGNORE_INDEX,
    KEEP_MASS,
    VOID,
    best_head_jaccard,
    intersect_and_union,
    jaccard,
    keep_mass,
    majority_miou,
    miou_from_areas,
)

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "EVALUATIONS",
    "EXTRA_CORRUPTIONS",
    "IGNORE_INDEX",
    "KEEP_MASS",
    "METRICS",
    "VOID",
    "Metric",
    "best_head_jaccard",
    "imagenet_a_accuracy",
    "imagenet_a_indices",
    "intersect_and_union",
    "jaccard",
    "keep_mass",
    "majority_miou",
    "mce",
    "mean_corruption_error",
    "miou_from_areas",
    "restrict_to_imagenet_a",
    "topk_accuracy",
    "topk_correct",
]
