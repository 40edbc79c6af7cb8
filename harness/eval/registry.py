"""The metrics the harness reports: a name, which way is better, what it is and its unit. No framework: a
frozen dataclass and a dict."""

from dataclasses import dataclass
from typing import Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    name: str
    direction: Direction
    description: str
    unit: str
    dataset: str | None = None  # the evaluation-only dataset an `evaluate` run measures it on

    def __post_init__(self):
        if self.direction not in ("higher", "lower"):
            raise ValueError(
                f"metric {self.name!r}: direction must be 'higher' or 'lower', not {self.direction!r}"
            )

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a > b if self.direction == "higher" else a < b


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("top1", "higher", "top-1 accuracy (topk_accuracy)", "%"),
        Metric("top5", "higher", "top-5 accuracy (topk_accuracy)", "%"),
        Metric(
            "imagenet_a_top1",
            "higher",
            "ImageNet-A top-1 accuracy over the 200 ImageNet-A classes' logits (imagenet_a_accuracy, Tab. 5)",
            "%",
            "imagenet_a",
        ),
        Metric(
            "mce",
            "lower",
            "ImageNet-C mean corruption error over the 15 corruptions, each normalised by AlexNet's "
            "(mce, Tab. 5)",
            "%",
            "imagenet_c",
        ),
        Metric(
            "mean_corruption_error",
            "lower",
            "ImageNet-C error averaged over the corruptions and severities, not normalised "
            "(mean_corruption_error)",
            "%",
            "imagenet_c",
        ),
        Metric(
            "jaccard",
            "higher",
            "PASCAL VOC-12 Jaccard of the 60%-mass last-block [CLS] attention, best head per class, "
            "mean over the images, x100 as Tabs. 6 and 9b print it (best_head_jaccard)",
            "%",
            "voc2012",
        ),
        Metric(
            "miou",
            "higher",
            "semantic segmentation mIoU: per-class IoU from areas summed over the validation set, nan-mean "
            "over the classes (mmseg's mean_iou; miou_from_areas, Tab. 12)",
            "%",
        ),
        Metric(
            "ssl_loss",
            "lower",
            "the self-supervised loss over the last pre-training epoch (MoCo-v3's contrastive loss, DINO's "
            "self-distillation; Tab. 9's pre-training)",
            "nats",
        ),
        Metric(
            "spatial_entropy",
            "lower",
            "L_se (Eq. 9) of the last block's maps over the last pre-training epoch (Tab. 9's pre-training)",
            "nats",
        ),
    )
}

# what an `evaluate` run can measure: metric name -> the dataset it needs
EVALUATIONS: dict[str, str] = {name: m.dataset for name, m in METRICS.items() if m.dataset is not None}
