"""Evaluation metrics as plain functions, each registered in `METRICS` with a name and a direction:
top-k accuracy, ImageNet-A accuracy and ImageNet-C mCE (Tab. 5), and the Jaccard of thresholded attention
against PASCAL VOC-12 (Tabs. 6 and 9b). Sources: the project's protocol notes (protocols.md, sections 3
and 4)."""

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
from harness.eval.segmentation import KEEP_MASS, VOID, best_head_jaccard, jaccard, keep_mass

__all__ = [
    "ALEXNET_ERRORS",
    "CORRUPTIONS",
    "EVALUATIONS",
    "EXTRA_CORRUPTIONS",
    "KEEP_MASS",
    "METRICS",
    "VOID",
    "Metric",
    "best_head_jaccard",
    "imagenet_a_accuracy",
    "imagenet_a_indices",
    "jaccard",
    "keep_mass",
    "mce",
    "mean_corruption_error",
    "restrict_to_imagenet_a",
    "topk_accuracy",
    "topk_correct",
]
