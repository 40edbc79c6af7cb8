"""Attention maps as segmentations (Tabs. 6 and 9b; docs/protocols.md section 4): DINO's 60%-mass
threshold and the Jaccard index against PASCAL VOC-12 ground truth, best head per class."""

import numpy as np
import torch

KEEP_MASS = 0.6
VOID = 255  # PASCAL VOC's "void" label (object borders and difficult regions)


def keep_mass(attention, mass: float = KEEP_MASS) -> np.ndarray:
    """Boolean masks of the smallest set of cells holding at least `mass` of each map's total, for
    non-negative maps on the last two axes (e.g. [H, h, w]: one map per head).

    The rule is DINO's `visualize_attention.py` (and SAR's `evaluate_segmentation.py`): sort each map's
    values ascending, divide by their sum, take the cumulative sum and keep the cells where
    `cumsum > 1 - mass`. Equivalently (in exact arithmetic), in descending order a cell is kept iff the
    cells before it hold strictly less than `mass`, so the cell that crosses `mass` is kept. Equal values
    that straddle the boundary are split: the sort is stable, so the later ones in row-major order are
    kept."""
    attention = np.asarray(attention)
    if attention.ndim < 2:
        raise ValueError(f"maps must be on the last two axes, got shape {attention.shape}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    flat = attention.reshape(*attention.shape[:-2], -1).astype(np.float64)
    if not np.isfinite(flat).all() or (flat < 0).any():
        raise ValueError("attention maps must be finite and non-negative")
    order = np.argsort(flat, axis=-1, kind="stable")
    ascending = np.take_along_axis(flat, order, axis=-1)
    total = ascending.sum(axis=-1, keepdims=True)
    if (total == 0).any():
        raise ValueError("an attention map sums to 0: no mass to keep")
    keep_sorted = np.cumsum(ascending / total, axis=-1) > 1.0 - mass
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return keep.reshape(attention.shape)


def _boolean(array, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.bool_:
        raise TypeError(f"{what} must be a boolean array, got dtype {array.dtype}")
    return array


def jaccard(masks, gt, ignore=None) -> float:
    """Jaccard index (IoU) |masks & gt| / |masks | gt| of a boolean prediction and a boolean ground truth of
    the same shape (pooled over every element). Pixels where the boolean `ignore` is True (VOC's void
    pixels) count in neither the intersection nor the union. Raises if the union is empty."""
    masks, gt = _boolean(masks, "masks"), _boolean(gt, "gt")
    if masks.shape != gt.shape:
        raise ValueError(f"masks {masks.shape} and gt {gt.shape} must have the same shape")
    valid = np.ones_like(gt)
    if ignore is not None:
        ignore = _boolean(ignore, "ignore")
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore {ignore.shape} and gt {gt.shape} must have the same shape")
        valid = ~ignore
    union = int(((masks | gt) & valid).sum())
    if union == 0:
        raise ValueError("Jaccard is undefined: prediction and ground truth are both empty")
    return int((masks & gt & valid).sum()) / union


def best_head_jaccard(head_masks, gt_labels, void: int = VOID, exclude_void: bool = True) -> float:
    """One image's score in Tabs. 6 and 9b: for each ground-truth class present in `gt_labels` ([h, w]
    integer labels; 0 = background, `void` = void), the best head's Jaccard between its mask in `head_masks`
    ([H, h, w] boolean, already at the labels' resolution, e.g. the 60%-mass patch masks upsampled by the
    patch size with nearest) and `gt_labels == class` (all instances of the class merged); the mean of those
    over the image's classes. The dataset score is the mean of this over the images.

    `exclude_void=True` drops void pixels from the union (as `jaccard(..., ignore=gt_labels == void)`).
    `exclude_void=False` reproduces SAR's (and IPViT's) `get_per_sample_jaccard`, whose `cur_mask != 255`
    is evaluated on a boolean mask and so excludes nothing: a head's foreground on void pixels enlarges the
    union.
    Raises on an image without a foreground class (the SAR script divides by zero there)."""
    head_masks = _boolean(head_masks, "head_masks")
    gt_labels = np.asarray(gt_labels)
    if not np.issubdtype(gt_labels.dtype, np.integer):
        raise TypeError(f"gt_labels must be integer labels, got dtype {gt_labels.dtype}")
    if head_masks.ndim != 3 or gt_labels.ndim != 2 or head_masks.shape[1:] != gt_labels.shape:
        raise ValueError(
            f"head_masks must be [H, h, w] and gt_labels [h, w] of the same h, w; got {head_masks.shape} "
            f"and {gt_labels.shape}"
        )
    classes = [int(c) for c in np.unique(gt_labels) if c not in (0, void)]
    if not classes:
        raise ValueError("the image has no foreground class (labels other than 0 and void)")
    valid = gt_labels != void if exclude_void else np.ones(gt_labels.shape, dtype=bool)
    scores = []
    for c in classes:
        gt = gt_labels == c
        intersection = (head_masks & gt).sum(axis=(1, 2))
        union = ((head_masks | gt) & valid).sum(axis=(1, 2))
        scores.append(float((intersection / union).max()))
    return float(np.mean(scores))


# ------------------------------------------------------------------------------------------ semantic mIoU
# Tab. 12 (docs/protocols.md section 6): mmseg v0.13's `mean_iou`. Per image, the pixels whose label is the
# ignore index are dropped; intersection, union, predicted and labelled areas per class are summed over
# the whole validation set; IoU = intersection / union per class; mIoU is their nan-mean, i.e. a class
# absent from both the labels and the predictions of every image (union 0) is left out, while a class that
# is only predicted counts with IoU 0. aAcc = correctly labelled pixels / labelled pixels.

IGNORE_INDEX = 255  # ADE20K's "other" (label 0) after mmseg's reduce_zero_label, and the crop padding


def intersect_and_union(pred, label, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """[4, num_classes] int64 areas of one batch (any shape; `pred` and `label` alike): intersection,
    union, predicted, labelled, over the pixels whose label is not `ignore_index`. As mmseg's `histc` over
    [0, num_classes - 1], a label (or prediction) outside [0, num_classes) that is not the ignore index
    counts in no class's labelled (predicted) area, while that pixel's prediction still counts. Counted by
    scatter-add on the labels' device, without reading anything back, so sums over images stay there."""
    pred, label = torch.as_tensor(pred).flatten().long(), torch.as_tensor(label).flatten().long()
    if pred.shape != label.shape:
        raise ValueError(f"pred and label must have as many pixels, got {pred.numel()} and {label.numel()}")
    valid = label != ignore_index
    labelled = (valid & (label >= 0) & (label < num_classes)).long()
    predicted = (valid & (pred >= 0) & (pred < num_classes)).long()
    label_at, pred_at = label.clamp(0, num_classes - 1), pred.clamp(0, num_classes - 1)  # weight 0 outside
    areas = torch.zeros(3, num_classes, dtype=torch.long, device=label.device)
    areas[0].scatter_add_(0, label_at, labelled * predicted * (pred == label).long())
    areas[1].scatter_add_(0, pred_at, predicted)
    areas[2].scatter_add_(0, label_at, labelled)
    intersect, predicted_area, labelled_area = areas
    return torch.stack([intersect, predicted_area + labelled_area - intersect, predicted_area, labelled_area])


def miou_from_areas(areas) -> dict:
    """mIoU, aAcc and mAcc in percent, and the per-class IoU (None where the union is empty), from the
    areas of `intersect_and_union` summed over a dataset."""
    intersect, union, _, labelled = torch.as_tensor(areas, dtype=torch.float64).cpu()
    if labelled.sum() == 0:
        raise ValueError("no labelled pixel: mIoU is undefined")
    iou = intersect / union  # nan where the union is empty
    accuracy = intersect / labelled
    return {
        "miou": 100 * float(iou.nanmean()),
        "aacc": 100 * float(intersect.sum() / labelled.sum()),
        "macc": 100 * float(accuracy.nanmean()),
        "per_class_iou": [None if torch.isnan(v) else 100 * float(v) for v in iou],
    }


def majority_miou(areas) -> float:
    """The mIoU (percent) of predicting, on every pixel, the class with the most labelled pixels, from the
    same areas: that class's IoU is its share of the labelled pixels, every other labelled class's is 0,
    and classes never labelled are left out. What a segmenter must beat to have learnt anything."""
    labelled = torch.as_tensor(areas, dtype=torch.float64).cpu()[3]
    present = int((labelled > 0).sum())
    if present == 0:
        raise ValueError("no labelled pixel: mIoU is undefined")
    return 100 * float(labelled.max() / labelled.sum()) / present
