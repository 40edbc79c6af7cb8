"""The evaluation engine (Tabs. 5 and 6): an upstream run's model measured on evaluation-only datasets.

- ImageNet-A (`imagenet_a_top1`): DeiT's evaluation transform, the argmax over the 200 ImageNet-A classes'
  logits only (hendrycks/natural-adv-examples `eval.py`).
- ImageNet-C (`mce`, `mean_corruption_error`): the 15 corruptions x 5 severities, no resize; the errors of
  every split are kept, so the report can normalise them by AlexNet (paper scale) or by a baseline row
  (local scale, where there is no AlexNet). A requeued job skips the splits it already measured.
- PASCAL VOC-12 (`jaccard`): the last block's [CLS] attention of every head at the evaluation size (480 px,
  position embedding interpolated), 60 % of its mass kept (DINO's rule), upsampled with nearest to the
  labels, the best head per class, averaged per image then over images, x100.

At local scale each dataset is its synthetic stand-in (harness.data.standins), built from the upstream's
synthetic classes. The weights must fit the model exactly: nothing is dropped, not even the head.
"""

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from harness import distributed, estimate
from harness.config.protocols import EvaluationProtocol
from harness.core import checkpoint
from harness.core.data import eval_loader, eval_transform, num_classes, synthetic_config
from harness.core.job import Heartbeat, RunFailed
from harness.core.model import build_model
from harness.core.precision import Precision
from harness.core.result import Extra, Outcome
from harness.data import IMAGENET_C_CORRUPTIONS, IMAGENET_C_SEVERITIES, build_dataset, imagenet_c_transform
from harness.data.standins import stand_in
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides, spec_of
from harness.eval import (
    EVALUATIONS,
    best_head_jaccard,
    imagenet_a_indices,
    keep_mass,
    mce,
    mean_corruption_error,
)
from harness.provenance import record_start
from harness.records import PARTIAL, read_object
from harness.results import atomic_write_json


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    headless = spec_of(cfg.upstream.engine).provides is Provides.backbone  # a self-supervised one: no head
    model = build_model(cfg, 0 if headless else num_classes(cfg), world.device)
    checkpoint.load_upstream(model, cfg.upstream)
    model.eval()
    if world.is_main:
        record_start(folder, world.job_id, 0, cfg.train.allow_code_change)
    precision = Precision(cfg.protocol.amp, world.device)
    heartbeat = Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    begin = time.perf_counter()
    metrics: dict[str, float] = {}
    details: dict[str, Any] = {}  # harness.core.result.Extra's fields
    wanted = list(cfg.eval.metrics)
    for dataset in dict.fromkeys(EVALUATIONS[name] for name in wanted):
        if dataset == "imagenet_a":
            metrics["imagenet_a_top1"] = imagenet_a_top1(cfg, model, precision, world)
        elif dataset == "imagenet_c":
            errors = corruption_errors(cfg, model, precision, world, folder, heartbeat)
            metrics["mean_corruption_error"] = mean_corruption_error(errors)
            # AlexNet's errors are on ImageNet-C itself; on the stand-in the report normalises by a row
            reference = None if cfg.data.dataset == "synthetic" else "alexnet"
            if reference:
                metrics["mce"] = mce(errors, reference)
            details.update(imagenet_c_errors=errors, mce_reference=reference)
        elif dataset == "voc2012":
            metrics["jaccard"], skipped = attention_jaccard(cfg, model, world)
            void = "excluded" if cfg.eval.exclude_void else "included"
            details.update(jaccard_void=void, jaccard_images_without_object=skipped)
    return Outcome(metrics=metrics, wall_time_s=time.perf_counter() - begin, extra=Extra(**details))


def _dataset(cfg: DictConfig, name: str, transform, **split) -> torch.utils.data.Dataset:
    """The real dataset under `eval.roots[name]`, or its synthetic stand-in at local scale."""
    if cfg.data.dataset == "synthetic":
        return stand_in(name, synthetic_config(cfg, name), transform, **split)
    root = cfg.eval.roots.get(name)
    if root is None:
        raise RunFailed(f"key 'eval.roots.{name}' is not set: where does {name} lie on this machine?")
    return build_dataset(name, "val", root, transform, **split)


@torch.no_grad()
def _correct(
    model: nn.Module, dataset, classes: list[int] | None, cfg: DictConfig, precision: Precision, world
) -> tuple[float, float]:
    """(correct, total) over every rank, the argmax taken over the `classes` logits only when given."""
    counts = torch.zeros(2, dtype=torch.float64, device=world.device)
    keep = None if classes is None else torch.tensor(classes, device=world.device)
    for images, targets in eval_loader(dataset, cfg.eval.batch_size, cfg.data.num_workers, world):
        images, targets = images.to(world.device), targets.to(world.device)
        with precision.autocast():
            logits = model(images).float()
        if keep is not None:
            logits = logits[:, keep]
        hits = (logits.argmax(dim=1) == targets).sum()
        counts += torch.stack([hits, torch.tensor(len(targets), device=world.device)]).double()
    correct, total = distributed.all_sum(counts.tolist(), world)
    return correct, total


def imagenet_a_top1(cfg: DictConfig, model: nn.Module, precision: Precision, world) -> float:
    dataset = _dataset(cfg, "imagenet_a", eval_transform(cfg))
    classes = list(getattr(dataset, "class_indices", None) or imagenet_a_indices())
    correct, total = _correct(model, dataset, classes, cfg, precision, world)
    return 100 * correct / total


def corruption_errors(
    cfg: DictConfig, model: nn.Module, precision: Precision, world, folder: Path, heartbeat: Heartbeat
) -> dict[str, list[float]]:
    """Top-1 error (a fraction) of every corruption x severity, in order; finished splits are kept."""
    done: dict[str, float] = (read_object(folder / PARTIAL)[0] or {}).get("imagenet_c", {})
    splits = [(c, s) for c in IMAGENET_C_CORRUPTIONS for s in IMAGENET_C_SEVERITIES]
    for number, (corruption, severity) in enumerate(splits, 1):
        key = f"{corruption}/{severity}"
        if key in done:
            continue
        dataset = _dataset(
            cfg, "imagenet_c", imagenet_c_transform(), corruption=corruption, severity=severity
        )
        correct, total = _correct(model, dataset, None, cfg, precision, world)
        done[key] = 1 - correct / total
        if world.is_main:
            atomic_write_json(folder / PARTIAL, {"imagenet_c": done})
            if heartbeat.due():
                heartbeat(step=number, steps=len(splits))
    return {c: [done[f"{c}/{s}"] for s in IMAGENET_C_SEVERITIES] for c in IMAGENET_C_CORRUPTIONS}


@torch.no_grad()
def attention_jaccard(cfg: DictConfig, model: nn.Module, world) -> tuple[float, int]:
    """The mean over images of the best-head Jaccard (x100), and how many images had no object (they are
    left out: the official script divides by zero there). Float32: the thresholds sort attention values."""
    size = cfg.eval.input_size
    split = {} if cfg.data.dataset == "synthetic" or size is None else {"size": size}
    dataset = _dataset(cfg, "voc2012", None, **split)
    scores: list[float] = []
    skipped = 0
    for images, labels in eval_loader(dataset, cfg.eval.batch_size, cfg.data.num_workers, world):
        _, S = model.forward_with_similarity(images.to(world.device))
        attention = S.float().flatten(2).softmax(-1).reshape(S.shape)  # [B, heads, h, w] over the patches
        for maps, label in zip(attention.cpu().numpy(), labels.numpy(), strict=True):
            if not np.isin(label, [0, 255], invert=True).any():
                skipped += 1
                continue
            kept = torch.from_numpy(keep_mass(maps, cfg.eval.keep_mass)).float()[None]
            masks = F.interpolate(kept, size=label.shape, mode="nearest")[0].bool().numpy()
            scores.append(best_head_jaccard(masks, label, exclude_void=cfg.eval.exclude_void))
    scores = distributed.all_gather(scores, world)  # summed exactly: the same on any number of ranks
    skipped = int(distributed.all_sum([float(skipped)], world)[0])
    if not scores:
        raise RunFailed("no image of the Jaccard's dataset has an object to compare the attention with")
    return 100 * math.fsum(scores) / len(scores), skipped


SPEC = EngineSpec(
    name="evaluate",
    run=run,
    protocol=EvaluationProtocol,
    description="measures an upstream run's model on evaluation-only datasets (Tabs. 5, 6, 9b)",
    consumes=Consumes.model,
    provides=Provides.nothing,
    progress=Progress.none,
    loss="-",
    cost=lambda cfg, gmacs: (  # forward passes only, at the evaluation size where one is set
        estimate.evaluated_images(cfg)
        * gmacs(cfg.eval.input_size or cfg.data.input_size)
        * estimate.EVAL_FLOPS_PER_MAC
    ),
    metrics=("imagenet_a_top1", "mce", "mean_corruption_error", "jaccard"),
    length=lambda cfg: 0,
    stand_ins=True,
)
