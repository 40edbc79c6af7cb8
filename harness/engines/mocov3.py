"""The MoCo-v3 engine (Tab. 9, Appendix C.2), `main_moco.py`'s loop: two asymmetric views per image, the
lr (linear warm-up, then cosine to 0) and the momentum (cosine from `momentum` to 1) set every iteration,
L_tot = L_ssl + lambda * L_se with L_se on the base encoder's maps of both views (SAR's last block in the
backbone). AdamW decays every parameter, as MoCo-v3's does. The checkpoint's `model` is the base
encoder's backbone: what the linear probe and the Jaccard load (MoCo-v3's `main_lincls.py` takes the base
encoder too). Every epoch writes an atomic checkpoint from which a resume continues bit-for-bit."""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from timm.optim import create_optimizer_v2

from harness import distributed, estimate
from harness.config.protocols import MoCoV3Protocol
from harness.core.data import train_loader
from harness.core.job import Heartbeat
from harness.core.log import RunLog
from harness.core.model import build_model, parallel
from harness.core.precision import Precision
from harness.core.result import Outcome
from harness.core.resume import Resumable
from harness.core.rng import seed_everything
from harness.core.steps import StepTotals, mean, optimizer_step, scaled_lr
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides
from harness.ssl import augment, mocov3, pretraining, schedules

LOSSES = ("loss", "ssl", "se")


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    p, m = cfg.protocol, cfg.protocol.mocov3
    seed_everything(cfg.seed + world.rank)
    backbone = mocov3.prepare_backbone(build_model(cfg, 0, world.device), m.stop_grad_conv1)
    model = mocov3.MoCo(backbone, m.mlp_dim, m.dim, m.temperature).to(world.device)
    net = parallel(model, world, sync_batchnorm=True)
    optimizer = create_optimizer_v2(
        model,
        "adamw",
        lr=scaled_lr(p),
        weight_decay=p.weight_decay,
        eps=p.opt_eps,
        filter_bias_and_bn=False,
        fused=True,
    )
    views = augment.TwoViews(cfg.data.input_size, m.crop_min, m.blur_radius)
    loader, sampler = train_loader(cfg, pretraining.train_split(cfg, views), world)
    steps = len(loader)
    lrs = schedules.cosine(scaled_lr(p), 0.0, cfg.epochs, steps, p.warmup_epochs)
    momenta = schedules.cosine(m.momentum, 1.0, cfg.epochs, steps)
    precision = Precision(cfg.protocol.amp, world.device)

    # `model`: the base encoder's backbone, what downstream runs load (MoCo-v3's main_lincls.py's too)
    parts = {"model": model.backbone, "moco": model, "optimizer": optimizer, "precision": precision}
    resumable = Resumable(folder, world, parts)
    state: dict[str, Any] = {"wall_time_s": 0.0}
    records, start = resumable.resume(cfg, uid, state)
    log = RunLog(folder, world.is_main, cfg.train.tensorboard, records, start * steps)
    heartbeat = Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    totals = StepTotals(world.device, cfg.train.max_nonfinite_steps, state, LOSSES)

    for epoch in range(start, cfg.epochs):
        begin = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        sums = dict.fromkeys(totals.names, 0.0)
        for step, ((x1, x2), _) in enumerate(loader):
            it = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = lrs[it]
            x1, x2 = x1.to(world.device, non_blocking=True), x2.to(world.device, non_blocking=True)
            with precision.autocast():
                l_ssl, maps = net(x1, x2, momenta[it])
            l_se = pretraining.spatial_entropy(maps if cfg.loss.sar else [S.detach() for S in maps], [1, 1])
            loss = l_ssl + cfg.loss.weight * l_se if cfg.loss.sar else l_ssl
            skipped = optimizer_step(loss, optimizer, net, precision, p.clip_grad)
            totals.add(loss, l_ssl, l_se, skipped)
            if (step + 1) % cfg.train.log_every == 0 or step + 1 == steps:
                window = totals.read(world, f"epoch {epoch + 1}, step {step + 1}")
                for key, value in window.items():
                    sums[key] += value
                log.scalars(
                    it + 1,
                    {
                        **{f"train/{k}": mean(window[k], window["steps"]) for k in LOSSES},
                        "train/lr": lrs[it],
                        "train/momentum": momenta[it],
                    },
                )
            if world.is_main and heartbeat.due():
                heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=step + 1, steps=steps)
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": mean(sums[k], sums["steps"]) for k in LOSSES},
            "lr": lrs[(epoch + 1) * steps - 1],
            "momentum": momenta[(epoch + 1) * steps - 1],
            "skipped_steps": int(sums["skipped"]),
            "seconds": time.perf_counter() - begin,
        }
        state["wall_time_s"] += record["seconds"]
        records.append(record)
        resumable.save(epoch + 1, records, state)
        if world.is_main:
            log.epoch((epoch + 1) * steps, record)
            heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=steps, steps=steps)
    log.close()
    return pretraining.outcome(cfg, records, state)


def _cost(cfg: DictConfig, gmacs: Callable[[int], float]) -> float:
    """Two views through the base encoder (trained) and the momentum encoder (forward only)."""
    images = estimate.train_images(cfg) * cfg.epochs
    passes = estimate.TRAIN_FLOPS_PER_MAC + estimate.EVAL_FLOPS_PER_MAC
    return images * 2 * gmacs(cfg.data.input_size) * passes


SPEC = EngineSpec(
    name="mocov3",
    run=run,
    protocol=MoCoV3Protocol,
    description="MoCo-v3 self-supervised pre-training, with L_se where the row says (Tab. 9, Fig. 6)",
    consumes=Consumes.nothing,
    provides=Provides.backbone,
    progress=Progress.epoch,
    loss="contrastive",
    cost=_cost,
    metrics=("ssl_loss", "spatial_entropy"),
)
