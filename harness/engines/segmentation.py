"""The segmentation engine (Tab. 12, Appendix C.3.1): an upstream run's PVT (its last block as trained)
under a Semantic FPN, trained on ADE20K as PVT's `fpn_pvt_s_ade20k_40k.py` does on mmseg v0.13
(docs/protocols.md section 6), counted in iterations.

- Model: the upstream classifier's weights, strictly but for its head, then pruned to the four stage
  maps (`harness.segment.model`); FPN neck 256, FPNHead 128, dropout 0.1, BN synchronised under DDP.
- Optimiser: AdamW at protocol.lr (2e-4 for 32 images), weight decay on every parameter (mmcv's default
  optimizer builder has no exemptions), no clipping; poly decay (power 0.9) to protocol.min_lr, set
  before every iteration from the iteration count as mmcv's PolyLrUpdaterHook does.
- Loss: cross-entropy at the labels' size, ignored pixels (label 0 of ADE20K, the crop padding) counted
  as 0 and averaged over all pixels, as mmseg v0.13's CrossEntropyLoss does (`avg_non_ignore` came
  later, default off).
- Data: one permutation of the train set per pass (seeded by seed and pass), each image augmented by the
  pipeline of `harness.segment.transforms` seeded by its position; mmseg wraps ADE20K in RepeatDataset x50
  and shuffles 50 passes at once: the same images per pass, a finer-grained order here.
- Every `eval_every` iterations and after the last: mIoU over the whole val split, single scale, whole
  image (sizes aligned to 32, logits resized to the original labels; one image at a time as mmseg's
  test loader, the synthetic images of one size in batches). Every `checkpoint_every`
  iterations and after the last: an atomic checkpoint with the model, optimiser, RNG states of every rank,
  the iteration (which also fixes the loader's place in its pass) and the partial loss sums, so that a
  resumed run computes what an uninterrupted one does.
"""

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from harness import distributed, estimate
from harness.config.protocols import SegmentationProtocol
from harness.core import checkpoint
from harness.core.data import eval_loader
from harness.core.job import Heartbeat
from harness.core.log import RunLog
from harness.core.model import parallel
from harness.core.precision import Precision
from harness.core.result import Best, Extra, Outcome
from harness.core.resume import Resumable
from harness.core.rng import seed_everything
from harness.core.schedule import evaluates_at
from harness.core.steps import StepTotals, mean, optimizer_step, scaled_lr, step_counts
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides
from harness.eval import intersect_and_union, majority_miou, miou_from_areas
from harness.segment.data import datasets, num_classes, train_loader
from harness.segment.model import build_segmenter


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    p, seg = cfg.protocol, cfg.protocol.segmentation
    seed_everything(cfg.seed + world.rank)
    classes = num_classes(cfg)
    model, unused = build_segmenter(cfg, classes, *checkpoint.upstream_weights(cfg.upstream))
    model = model.to(world.device)
    # mmseg's SyncBN (the FPN head's norm_cfg): statistics of the global batch, 4 images x 8 GPUs
    net = parallel(model, world, sync_batchnorm=True)
    base_lr = scaled_lr(p)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=base_lr, weight_decay=p.weight_decay, eps=p.opt_eps, fused=True
    )
    train, val = datasets(cfg)
    loader, steps = train_loader(cfg, train, world)
    # whole images of their own sizes one at a time; the synthetic ones, all of one size, in batches
    val_batch = cfg.eval.batch_size if cfg.data.dataset == "synthetic" else 1
    val_loader = eval_loader(val, val_batch, cfg.data.num_workers, world)
    precision = Precision(cfg.protocol.amp, world.device)

    parts = {"model": model, "optimizer": optimizer, "precision": precision}
    resumable = Resumable(folder, world, parts, progress="iteration")
    state: dict[str, Any] = {"wall_time_s": 0.0, "window": {"loss": 0.0, "steps": 0.0, "skipped": 0.0}}
    records, start = resumable.resume(cfg, uid, state)
    log = RunLog(folder, world.is_main, cfg.train.tensorboard, records, start)
    heartbeat = Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    totals = StepTotals(world.device, cfg.train.max_nonfinite_steps, state, losses=("loss",))

    iteration, total = start, seg.iterations
    started = begin = time.perf_counter()  # begin: of the wall time not yet in state
    net.train()
    while iteration < total:
        epoch, step = divmod(iteration, steps)  # the loader's place: pass `epoch`, batch `step` of it
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip = step * loader.batch_size
        for images, labels in loader:
            set_lr(optimizer, poly_lr(base_lr, p.min_lr, iteration, total, seg.poly_power))
            images = images.to(world.device, non_blocking=True)
            labels = labels.to(world.device, non_blocking=True)
            with precision.autocast():
                logits = net(images)
            loss = F.cross_entropy(
                logits.float(), labels, ignore_index=seg.ignore_index, reduction="none"
            ).mean()
            totals.add(loss, optimizer_step(loss, optimizer, net, precision, p.clip_grad))
            iteration += 1
            evaluate = evaluates_at(iteration, seg.eval_every, total)
            save = iteration % seg.checkpoint_every == 0 or iteration == total
            if iteration % cfg.train.log_every == 0 or evaluate or save:  # the only reads from the device
                sums = totals.read(world, f"iteration {iteration}")
                for key in state["window"]:
                    state["window"][key] += sums[key]
                lr = optimizer.param_groups[0]["lr"]
                log.scalars(iteration, {"train/loss": mean(sums["loss"], sums["steps"]), "train/lr": lr})
            if evaluate:
                window = state["window"]
                record = {
                    "iteration": iteration,
                    "lr": optimizer.param_groups[0]["lr"],
                    "train_loss": mean(window["loss"], window["steps"]),
                    "skipped_steps": int(window["skipped"]),
                    **validate(model, val_loader, classes, seg.ignore_index, precision, world),
                }
                net.train()
                state["window"] = dict.fromkeys(window, 0.0)
                records.append(record)
                log.epoch(iteration, record)
            if save:
                state["wall_time_s"] += time.perf_counter() - begin
                begin = time.perf_counter()
                resumable.save(iteration, records, state)
            if world.is_main and heartbeat.due():
                rate = (iteration - start) * p.batch_size / (time.perf_counter() - started)
                heartbeat(epoch=1, epochs=1, step=iteration, steps=total, images_per_s=rate)
            if iteration == total:
                break
    log.close()
    return outcome(cfg, records, state, unused)


def poly_lr(base: float, floor: float, iteration: int, total: int, power: float) -> float:
    """mmcv's PolyLrUpdaterHook: (base - floor) * (1 - iteration / total) ** power + floor."""
    return (base - floor) * (1 - iteration / total) ** power + floor


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, classes: int, ignore: int, precision: Precision, world
) -> dict[str, Any]:
    """mIoU, aAcc, mAcc and per-class IoU over the val split, and the mIoU of predicting its most frequent
    class everywhere (the floor a segmenter must clear): areas summed on the device, read once."""
    model.eval()
    areas = torch.zeros(4, classes, dtype=torch.long, device=world.device)
    for images, labels in loader:
        images, labels = images.to(world.device), labels.to(world.device)
        with precision.autocast():
            logits = model(images)
        logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        areas += intersect_and_union(logits.argmax(1), labels, classes, ignore)
    summed = torch.tensor(distributed.all_sum(areas.flatten().double().tolist(), world)).reshape(4, classes)
    scores = {**miou_from_areas(summed), "majority_miou": majority_miou(summed)}
    return {f"val_{name}": value for name, value in scores.items()}


def outcome(
    cfg: DictConfig, records: list[dict[str, Any]], state: dict[str, Any], unused: list[str]
) -> Outcome:
    """The last validation's mIoU (and aAcc, mAcc, per-class IoU, the majority class's mIoU), the best
    validation's, the upstream keys left out of the backbone."""
    last, best = records[-1], max(records, key=lambda r: r["val_miou"])
    return Outcome(
        metrics={"miou": last["val_miou"]},
        best=Best({"miou": best["val_miou"]}, iteration=best["iteration"]),
        wall_time_s=state["wall_time_s"],
        **step_counts(state),
        extra=Extra(
            aacc=last["val_aacc"],
            macc=last["val_macc"],
            per_class_iou=last["val_per_class_iou"],
            majority_miou=last["val_majority_miou"],
            iterations=cfg.protocol.segmentation.iterations,
            upstream_keys_unused=unused,
        ),
    )


SPEC = EngineSpec(
    name="segmentation",
    run=run,
    protocol=SegmentationProtocol,
    description="trains a Semantic FPN on an upstream run's PVT backbone (Tab. 12)",
    consumes=Consumes.backbone,
    provides=Provides.nothing,
    progress=Progress.iteration,
    loss="pixel ce",
    cost=lambda cfg, gmacs: (  # iterations of crops through the backbone (the FPN is not counted)
        cfg.protocol.segmentation.iterations
        * cfg.protocol.batch_size
        * gmacs(cfg.protocol.segmentation.crop_size)
        * estimate.TRAIN_FLOPS_PER_MAC
    ),
    metrics=("miou",),
    length=lambda cfg: cfg.protocol.segmentation.iterations,
    activity="segmentation",
    stand_ins=True,
)
