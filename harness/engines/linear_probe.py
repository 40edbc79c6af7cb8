"""The linear-probe engine (Tab. 9a, Appendix D.4): a pre-training run's backbone, frozen, and a linear
classifier on its features trained with SGD (momentum, no weight decay, cosine per epoch to 0), as DINO's
`eval_linear.py` and MoCo-v3's `main_lincls.py` do. The features are each method's own (`probe.features`):
`last4`, the [CLS] tokens of the last four blocks through the final norm, concatenated (DINO); `final`, the
[CLS] after the final norm (MoCo-v3). The backbone runs in eval mode without gradients: nothing reaches
it, so only the classifier is checkpointed (every epoch, with optimizer, schedule and RNG states)."""

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from harness import distributed
from harness.core import checkpoint
from harness.core.data import datasets, eval_loader, num_classes, train_loader
from harness.core.job import Heartbeat, restore, resume_point
from harness.core.log import RunLog
from harness.core.model import build_model
from harness.core.precision import Precision
from harness.core.rng import gathered_rng_state, seed_everything
from harness.core.schedule import LrSchedule
from harness.core.steps import StepTotals, mean, optimizer_step, scaled_lr, step_counts
from harness.engines import supervised
from harness.provenance import provenance
from harness.results import CHECKPOINT, checkpoint_path

LAST_BLOCKS = 4  # DINO's `n_last_blocks` for ViT-S


class Features(nn.Module):
    """The frozen backbone's probe features: `last4` or `final`."""

    def __init__(self, backbone: nn.Module, kind: str) -> None:
        super().__init__()
        self.backbone, self.kind = backbone.eval().requires_grad_(False), kind
        # DINO's get_intermediate_layers gives every block of a backbone with fewer than four
        self.blocks = min(LAST_BLOCKS, len(backbone.blocks)) if kind == "last4" else 1
        self.dim = backbone.embed_dim * self.blocks

    def train(self, mode: bool = True) -> "Features":
        return super().train(False)  # frozen: never in train mode (drop path, dropout off)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "final":
            return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        blocks = self.backbone.get_intermediate_layers(x, n=self.blocks, return_prefix_tokens=True, norm=True)
        return torch.cat([prefix[:, 0] for _, prefix in blocks], dim=-1)


def linear_classifier(dim: int, classes: int) -> nn.Linear:
    """Both probes' classifier: weights ~ N(0, 0.01), zero bias."""
    layer = nn.Linear(dim, classes)
    nn.init.normal_(layer.weight, std=0.01)
    nn.init.zeros_(layer.bias)
    return layer


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> dict[str, Any]:
    p = cfg.protocol
    seed_everything(cfg.seed + world.rank)
    source = checkpoint_path(Path(cfg.upstream.folder), cfg.upstream.checkpoint)
    what = f"upstream run {cfg.upstream.uid} (row '{cfg.upstream.row}' of {cfg.upstream.recipe})"
    backbone = build_model(cfg, 0, world.device)
    checkpoint.load_weights(backbone, checkpoint.load_model(source, what), f"{what}: {source}")
    features = Features(backbone, p.probe.features)
    classes = num_classes(cfg)
    classifier = linear_classifier(features.dim, classes).to(world.device)
    net: nn.Module = classifier
    if world.size > 1:
        ids = [world.local_rank] if world.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(classifier, device_ids=ids)
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        scaled_lr(p),
        momentum=p.probe.momentum,
        weight_decay=p.weight_decay,
        fused=True,
    )
    train, val = datasets(cfg)
    # DINO's eval_linear.py and MoCo-v3's main_lincls.py train on the last partial batch too
    loader, sampler = train_loader(cfg, train, world, drop_last=False)
    val_loader = eval_loader(val, p.batch_size // world.size, cfg.data.num_workers, world)
    schedule = LrSchedule(optimizer, p, cfg.epochs, len(loader))
    precision = Precision(cfg.protocol.amp, world.device)

    records: list[dict[str, Any]] = []
    state: dict[str, Any] = {"wall_time_s": 0.0}
    start = 0
    saved = resume_point(cfg, uid, world, folder)
    if saved is not None:
        parts = {
            "classifier": classifier,
            "optimizer": optimizer,
            "schedule": schedule,
            "precision": precision,
        }
        records, start = restore(saved, parts, state, world.rank)
    log = RunLog(folder, world.is_main, cfg.train.tensorboard, records, start * len(loader))
    heartbeat = Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    steps = len(loader)
    totals = StepTotals(world.device, cfg.train.max_nonfinite_steps, state, ("loss",))

    for epoch in range(start, cfg.epochs):
        begin = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        sums = dict.fromkeys(totals.names, 0.0)
        for step, (images, targets) in enumerate(loader):
            schedule.set(epoch, step)
            images = images.to(world.device, non_blocking=True)
            targets = targets.to(world.device, non_blocking=True)
            with precision.autocast():
                logits = net(features(images))
            loss = F.cross_entropy(logits.float(), targets)
            skipped = optimizer_step(loss, optimizer, net, precision, None)
            totals.add(loss, skipped)
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                window = totals.read(world, f"epoch {epoch + 1}, step {step + 1}")
                for key, value in window.items():
                    sums[key] += value
                log.scalars(
                    epoch * steps + step + 1,
                    {
                        "train/loss": mean(window["loss"], window["steps"]),
                        "train/lr": optimizer.param_groups[0]["lr"],
                    },
                )
            if world.is_main and heartbeat.due():
                heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=step + 1, steps=steps)
        record = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": mean(sums["loss"], sums["steps"]),
            "skipped_steps": int(sums["skipped"]),
        }
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.epochs:
            probe = nn.Sequential(features, classifier)  # the supervised engine's top-1/5 on the probe
            record.update(supervised.validate(probe, val_loader, precision, world))
        record["seconds"] = time.perf_counter() - begin
        state["wall_time_s"] += record["seconds"]
        records.append(record)
        rngs = gathered_rng_state(world.size)
        if world.is_main:
            log.epoch((epoch + 1) * steps, record)
            checkpoint.save(
                folder / CHECKPOINT,
                {
                    "classifier": classifier.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "precision": precision.state_dict(),
                    "epoch": epoch + 1,
                    "records": records,
                    "state": dict(state),
                    "rng": rngs,
                },
            )
            heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=steps, steps=steps)
    log.close()
    return result(cfg, uid, records, state, world)


def result(cfg: DictConfig, uid: str, records, state, world: distributed.World) -> dict[str, Any]:
    """result.json of a probe: the final epoch's top-1/5 (what both methods report), the best epoch."""
    evaluated = [r for r in records if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"])
    gpus = world.size if torch.cuda.is_available() else 0
    return {
        "uid": uid,
        "table": cfg.table,
        "scale": cfg.scale,
        "engine": cfg.engine,
        "metrics": {"top1": records[-1]["val_top1"], "top5": records[-1]["val_top5"]},
        "best": {"top1": best["val_top1"], "epoch": best["epoch"]},
        "epochs": cfg.epochs,
        "wall_time_s": state["wall_time_s"],
        "gpu_hours": state["wall_time_s"] * gpus / 3600,
        **step_counts(state),
        "provenance": provenance(world.size, cfg.seed, cfg.recipe_file, cfg.recipe_sha256),
        "chance_top1": 100 / num_classes(cfg),
        "features": cfg.protocol.probe.features,
    }
