"""The supervised engine (Appendix D): each architecture's original protocol, via timm, plus SAR.

L_tot = L_ce + lambda * L_se (Eq. 9), L_se from `sar.spatial_entropy` on the last block's similarity maps.
Every epoch appends one line to metrics.jsonl and writes an atomic checkpoint holding everything needed to
continue bit-for-bit (model, optimizer, schedule, scaler, RNG states of every rank, the metric records);
starting a run whose checkpoint exists resumes it, and each epoch appears once in the log however often it
was killed. The model of the best validated epoch is kept too, for downstream runs that ask for `best`.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from timm.data import Mixup
from timm.utils import ModelEmaV3
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from harness import distributed, estimate
from harness.config.protocols import SupervisedProtocol
from harness.core import checkpoint
from harness.core.data import criterion, datasets, eval_loader, mixup, num_classes, train_loader
from harness.core.job import Heartbeat
from harness.core.log import RunLog
from harness.core.model import aux_loss, build_model, for_training
from harness.core.precision import Precision
from harness.core.result import Best, Extra, Outcome
from harness.core.resume import Resumable
from harness.core.rng import seed_everything
from harness.core.schedule import LrSchedule, evaluates_at, loss_weight
from harness.core.steps import StepTotals, adamw, mean, optimizer_step, step_counts
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides
from harness.results import BEST_CHECKPOINT


def run(
    cfg: DictConfig,
    uid: str,
    world: distributed.World,
    folder: Path,
    init: Callable[[nn.Module], None] | None = None,
) -> Outcome:
    """Train the run from scratch, or from `init` (which loads weights into the fresh model: fine-tuning)."""
    seed_everything(cfg.seed + world.rank)
    classes = num_classes(cfg)
    model = build_model(cfg, classes, world.device)
    if init is not None:
        init(model)
    training, net = for_training(model, cfg, world)
    optimizer = adamw(training, cfg.protocol)
    decay = cfg.protocol.model_ema_decay
    ema = ModelEmaV3(model, decay=decay) if decay is not None else None
    train, val = datasets(cfg)
    loader, sampler = train_loader(cfg, train, world)
    val_loader = eval_loader(val, cfg.protocol.batch_size // world.size, cfg.data.num_workers, world)
    schedule = LrSchedule(optimizer, cfg.protocol, cfg.epochs, len(loader))
    precision = Precision(cfg.protocol.amp, world.device)
    mixup_fn = mixup(cfg.protocol, classes)
    loss_fn = criterion(cfg.protocol, mixup_fn)

    parts = {"model": model, "optimizer": optimizer, "schedule": schedule, "precision": precision}
    if training.drloc is not None:
        parts["drloc"] = training.drloc
    if ema is not None:
        parts["ema"] = ema.module
    resumable = Resumable(folder, world, parts)
    state: dict[str, Any] = {"wall_time_s": 0.0, "best_top1": -math.inf}
    records, start = resumable.resume(cfg, uid, state)
    log = RunLog(folder, world.is_main, cfg.train.tensorboard, records, start * len(loader))
    heartbeat = Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    totals = StepTotals(world.device, cfg.train.max_nonfinite_steps, state)
    loop = Loop(
        model, net, loader, optimizer, schedule, precision, mixup_fn, loss_fn, ema, log, heartbeat, totals
    )

    for epoch in range(start, cfg.epochs):
        begin = time.perf_counter()
        sampler.set_epoch(epoch)
        stats = train_one_epoch(cfg, loop, world, epoch)
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **stats}
        if cfg.loss.sar:
            record["loss_weight"] = loss_weight(cfg.loss, epoch, cfg.epochs)
        if evaluates_at(epoch + 1, cfg.train.eval_every, cfg.epochs):
            record.update(validate(model, val_loader, precision, world))
            if ema is not None:
                record.update(
                    {f"{k}_ema": v for k, v in validate(ema.module, val_loader, precision, world).items()}
                )
        record["seconds"] = time.perf_counter() - begin
        state["wall_time_s"] += record["seconds"]
        records.append(record)
        if world.is_main:
            log.epoch((epoch + 1) * len(loader), record)
            if record.get("val_top1", -math.inf) > state["best_top1"]:
                state["best_top1"] = record["val_top1"]
                best = {"model": model.state_dict(), "epoch": epoch + 1, "top1": record["val_top1"]}
                checkpoint.save(folder / BEST_CHECKPOINT, best)
        resumable.save(epoch + 1, records, state)
        if world.is_main:
            heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=len(loader), steps=len(loader))
    log.close()
    return outcome(cfg, records, state)


@dataclass
class Loop:
    """What an epoch of training uses, built once per run."""

    model: nn.Module  # the classifier (what the EMA follows and downstream runs load)
    net: nn.Module  # what is called: the model with its auxiliary heads, in DDP with several processes
    loader: DataLoader
    optimizer: Optimizer
    schedule: LrSchedule
    precision: Precision
    mixup_fn: Mixup | None
    loss_fn: nn.Module
    ema: ModelEmaV3 | None
    log: RunLog
    heartbeat: Heartbeat
    totals: StepTotals  # for the whole run: the non-finite streak spans epochs


def train_one_epoch(cfg: DictConfig, loop: Loop, world: distributed.World, epoch: int) -> dict[str, float]:
    """One pass over the train split; the host reads the losses every `train.log_every` steps only."""
    net, loader, optimizer, log, heartbeat = loop.net, loop.loader, loop.optimizer, loop.log, loop.heartbeat
    net.train()
    totals = loop.totals
    epoch_sums = {"loss": 0.0, "ce": 0.0, "aux": 0.0, "drloc": 0.0, "steps": 0.0, "skipped": 0.0}
    aux_name = "tv" if cfg.loss.variant == "tv" else "se"
    weight = loss_weight(cfg.loss, epoch, cfg.epochs)
    steps, start = len(loader), time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        loop.schedule.set(epoch, step)
        images = images.to(world.device, non_blocking=True)
        targets = targets.to(world.device, non_blocking=True)
        if loop.mixup_fn is not None:
            images, targets = loop.mixup_fn(images, targets)
        with loop.precision.autocast():
            logits, S, drloc = net(images)
        ce = loop.loss_fn(logits.float(), targets)
        aux = aux_loss(cfg, S if cfg.loss.sar else S.detach())  # L_se is logged even where unused
        loss = ce + weight * aux if cfg.loss.sar else ce
        if drloc is not None:
            loss = loss + cfg.loss.drloc_weight * drloc
        skipped = optimizer_step(loss, optimizer, net, loop.precision, cfg.protocol.clip_grad)
        if loop.ema is not None:
            loop.ema.update(loop.model)
        totals.add(loss, ce, aux, drloc if drloc is not None else torch.zeros_like(ce), skipped)
        if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
            window = totals.read(world, f"epoch {epoch + 1}, step {step + 1}")
            for key, value in window.items():
                epoch_sums[key] += value
            log.scalars(
                epoch * steps + step + 1,
                {
                    "train/loss": mean(window["loss"], window["steps"]),
                    "train/ce": mean(window["ce"], window["steps"]),
                    f"train/{aux_name}": mean(window["aux"], window["steps"]),
                    **({"train/drloc": mean(window["drloc"], window["steps"])} if drloc is not None else {}),
                    "train/lr": optimizer.param_groups[0]["lr"],
                },
            )
        if world.is_main and heartbeat.due():
            rate = (step + 1) * images.shape[0] * world.size / (time.perf_counter() - start)
            heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=step + 1, steps=steps, images_per_s=rate)
    seconds = time.perf_counter() - start
    return {
        "train_loss": mean(epoch_sums["loss"], epoch_sums["steps"]),
        "train_ce": mean(epoch_sums["ce"], epoch_sums["steps"]),
        f"train_{aux_name}": mean(epoch_sums["aux"], epoch_sums["steps"]),
        **(
            {"train_drloc": mean(epoch_sums["drloc"], epoch_sums["steps"])}
            if cfg.loss.drloc_weight > 0
            else {}
        ),
        "images_per_s": steps * cfg.protocol.batch_size / seconds if seconds else math.nan,
        "train_seconds": seconds,
        "skipped_steps": int(epoch_sums["skipped"]),
    }


@torch.no_grad()
def validate(model: nn.Module, loader, precision: Precision, world: distributed.World) -> dict[str, float]:
    """Top-1 and top-5 on the val split, counted on the device and read once."""
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64, device=world.device)
    for images, targets in loader:
        images, targets = images.to(world.device), targets.to(world.device)
        with precision.autocast():
            logits = model(images)
        hits = logits.float().topk(min(5, logits.shape[1]), dim=1).indices == targets[:, None]
        counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), torch.tensor(len(targets))]).double()
    correct1, correct5, count = distributed.all_sum(counts.tolist(), world)
    return {"val_top1": 100 * correct1 / count, "val_top5": 100 * correct5 / count}


def outcome(cfg: DictConfig, records: list[dict[str, Any]], state: dict[str, Any]) -> Outcome:
    """A training run's: the final epoch's metrics, the best epoch, the EMA model's, and which top-1 the
    paper prints (`protocol.reports`)."""
    evaluated = [r for r in records if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"])
    ema = None
    reported = {"final": records[-1]["val_top1"], "best": best["val_top1"]}
    if cfg.protocol.model_ema_decay is not None:
        best_ema = max(evaluated, key=lambda r: r["val_top1_ema"])
        ema = {
            "top1": records[-1]["val_top1_ema"],
            "best_top1": best_ema["val_top1_ema"],
            "best_epoch": best_ema["epoch"],
        }
        reported["best_ema"] = ema["best_top1"]
    return Outcome(
        metrics={"top1": records[-1]["val_top1"], "top5": records[-1]["val_top5"]},
        best=Best({"top1": best["val_top1"]}, epoch=best["epoch"]),
        epochs=cfg.epochs,
        wall_time_s=state["wall_time_s"],
        **step_counts(state),
        extra=Extra(reported={"what": cfg.protocol.reports, "top1": reported[cfg.protocol.reports]}, ema=ema),
    )


SPEC = EngineSpec(
    name="supervised",
    run=run,
    protocol=SupervisedProtocol,
    description="trains a classifier from scratch, with L_se where the row says (Tabs. 1-3, 7, 8, 13)",
    consumes=Consumes.nothing,
    provides=Provides.classifier,
    progress=Progress.epoch,
    loss="ce",
    cost=lambda cfg, gmacs: (
        estimate.train_images(cfg) * cfg.epochs * gmacs(cfg.data.input_size) * estimate.TRAIN_FLOPS_PER_MAC
    ),
    metrics=("top1", "top5"),
    validates=True,
)
