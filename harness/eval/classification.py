"""Top-k accuracy, and ImageNet-A's accuracy of an ImageNet-1k classifier (Tab. 5)."""

import pkgutil
from collections.abc import Sequence
from functools import cache

import torch

IMAGENET_A_CLASSES = 200


def _checked(logits, targets, ks: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    logits, targets = torch.as_tensor(logits), torch.as_tensor(targets)
    if logits.ndim != 2:
        raise ValueError(f"logits must be [N, classes], got shape {tuple(logits.shape)}")
    n, classes = logits.shape
    if targets.shape != (n,):
        raise ValueError(f"targets must be [N] = [{n}] to match the logits, got shape {tuple(targets.shape)}")
    if n == 0:
        raise ValueError("no samples: accuracy is undefined")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got {targets.dtype}")
    if targets.min() < 0 or targets.max() >= classes:
        raise ValueError(
            f"targets must lie in 0..{classes - 1}, got values in {int(targets.min())}..{int(targets.max())}"
        )
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= classes for k in ks):
        raise ValueError(f"ks must be integers in 1..{classes} (the number of classes), got {ks}")
    return logits, targets.to(logits.device), ks


def topk_correct(logits, targets, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many samples have their target among the k largest logits, per k (counts, to sum over batches or
    ranks). A sample counts when its target is in `torch.topk`'s k indices; ties there are broken by torch."""
    logits, targets, ks = _checked(logits, targets, ks)
    hits = logits.topk(max(ks), dim=1).indices == targets[:, None]
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def topk_accuracy(logits, targets, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k accuracy in percent, per k: `logits` [N, C] (tensor or array), `targets` [N] in 0..C-1."""
    correct = topk_correct(logits, targets, ks)
    return {k: 100.0 * c / len(targets) for k, c in correct.items()}


@cache
def imagenet_a_indices() -> tuple[int, ...]:
    """The ImageNet-1k indices of ImageNet-A's 200 classes, in ImageNet-A's class order (its wnids sorted, as
    ImageFolder numbers them), from the list timm ships (`timm/data/_info/imagenet_a_indices.txt`). It equals
    `indices_in_1k` of hendrycks/natural-adv-examples `eval.py`."""
    text = pkgutil.get_data("timm.data", "_info/imagenet_a_indices.txt")
    if text is None:
        raise FileNotFoundError("timm.data has no _info/imagenet_a_indices.txt")
    indices = tuple(int(token) for token in text.decode().split())
    if len(indices) != IMAGENET_A_CLASSES or list(indices) != sorted(set(indices)) or indices[-1] > 999:
        raise ValueError("timm's imagenet_a_indices.txt is not 200 increasing ImageNet-1k indices")
    return indices


def restrict_to_imagenet_a(logits) -> torch.Tensor:
    """[N, 1000] ImageNet-1k logits -> [N, 200] logits of ImageNet-A's classes, in ImageNet-A's order."""
    logits = torch.as_tensor(logits)
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise ValueError(f"ImageNet-A needs [N, 1000] ImageNet-1k logits, got shape {tuple(logits.shape)}")
    return logits[:, torch.tensor(imagenet_a_indices(), device=logits.device)]


def imagenet_a_accuracy(logits, targets) -> float:
    """ImageNet-A top-1 accuracy in percent, as hendrycks/natural-adv-examples `eval.py` computes it: the
    argmax over the 200 ImageNet-A classes' logits only (`net(x)[:, indices_in_1k]`), against `targets` in
    0..199 (ImageNet-A's own class order). `logits` are [N, 1000] from an ImageNet-1k model."""
    return topk_accuracy(restrict_to_imagenet_a(logits), targets, ks=(1,))[1]
