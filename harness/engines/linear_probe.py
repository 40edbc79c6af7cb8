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

from harness import distributed, estimate
from harness.config.protocols import ProbeProtocol
from harness.core import checkpoint
from harness.core.data import datasets, eval_loader, num_classes, train_loader
from harness.core.job import Heartbeat
from harness.core.log import RunLog
from harness.core.model import build_model, parallel
from harness.core.precision import Precision
from harness.core.result import Best, Extra, Outcome
from harness.core.resume import Resumable
from harness.core.rng import seed_everything
from harness.core.schedule import LrSchedule, evaluates_at
from harness.core.steps import StepTotals, mean, optimizer_step, scaled_lr, step_counts
from harness.engines import supervised
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides

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


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    p = cfg.protocol
    seed_everything(cfg.seed + world.rank)
    backbone = build_model(cfg, 0, world.device)
    checkpoint.load_upstream(backbone, cfg.upstream)
    features = Features(backbone, p.probe.features)
    classes = num_classes(cfg)
    classifier = linear_classifier(features.dim, classes).to(world.device)
    net = parallel(classifier, world)
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

    parts = {"classifier": classifier, "optimizer": optimizer, "schedule": schedule, "precision": precision}
    resumable = Resumable(folder, world, parts)
    state: dict[str, Any] = {"wall_time_s": 0.0}
    records, start = resumable.resume(cfg, uid, state)
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
        if evaluates_at(epoch + 1, cfg.train.eval_every, cfg.epochs):
            probe = nn.Sequential(features, classifier)  # the supervised engine's top-1/5 on the probe
            record.update(supervised.validate(probe, val_loader, precision, world))
        record["seconds"] = time.perf_counter() - begin
        state["wall_time_s"] += record["seconds"]
        records.append(record)
        resumable.save(epoch + 1, records, state)
        if world.is_main:
            log.epoch((epoch + 1) * steps, record)
            heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=steps, steps=steps)
    log.close()
    return outcome(cfg, records, state)


def outcome(cfg: DictConfig, records: list[dict[str, Any]], state: dict[str, Any]) -> Outcome:
    """A probe's: the final epoch's top-1/5 (what both methods report), the best epoch."""
    evaluated = [r for r in records if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"])
    return Outcome(
        metrics={"top1": records[-1]["val_top1"], "top5": records[-1]["val_top5"]},
        best=Best({"top1": best["val_top1"]}, epoch=best["epoch"]),
        epochs=cfg.epochs,
        wall_time_s=state["wall_time_s"],
        **step_counts(state),
        extra=Extra(chance_top1=100 / num_classes(cfg), features=cfg.protocol.probe.features),
    )


SPEC = EngineSpec(
    name="linear_probe",
    run=run,
    protocol=ProbeProtocol,
    description="trains a linear classifier on an upstream self-supervised backbone, frozen (Tab. 9a)",
    consumes=Consumes.backbone,
    provides=Provides.nothing,
    progress=Progress.epoch,
    loss="ce",
    cost=lambda cfg, gmacs: (  # forward passes through the frozen backbone; the classifier is negligible
        estimate.train_images(cfg) * cfg.epochs * gmacs(cfg.data.input_size) * estimate.EVAL_FLOPS_PER_MAC
    ),
    metrics=("top1", "top5"),
    accepts=frozenset({Provides.backbone}),
    activity="linear probing",
    validates=True,
)
