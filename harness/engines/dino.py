"""The DINO engine (Tab. 9, Appendix C.2), `main_dino.py`'s loop: multi-crop (two global crops at
data.input_size, `local_crops_number` small ones), the student on every crop and the EMA teacher on the
global ones, the centred self-distillation loss with the teacher temperature of the epoch, and every
iteration the lr (linear warm-up, cosine to min_lr), the weight decay (cosine 0.04 -> 0.4, norms and biases
exempt) and the teacher momentum (cosine to 1). L_tot = L_ssl + lambda * L_se, L_se on the student's maps
of the crops `loss.crops` names (S on each crop's own token grid). Each parameter's gradient is clipped
where protocol.clip_grad is set (DINO clips per parameter), and the head's last layer is frozen for the
first `freeze_last_layer` epochs. The checkpoint's `model` is the teacher's backbone, DINO's evaluation
convention; it also holds student, teacher, centre and optimizer, so that a resume continues bit-for-bit."""

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from timm.optim import create_optimizer_v2

from harness import distributed, estimate
from harness.config.protocols import DinoProtocol
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
from harness.ssl import augment, dino, pretraining, schedules

LOSSES = ("loss", "ssl", "se")


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    p, d = cfg.protocol, cfg.protocol.dino
    seed_everything(cfg.seed + world.rank)
    backbone = dino.prepare_backbone(build_model(cfg, 0, world.device))
    head = dino.Head(backbone.embed_dim, d.out_dim, d.hidden_dim, d.bottleneck_dim, d.norm_last_layer)
    student = dino.MultiCrop(backbone, head).to(world.device)
    # DINO converts to SyncBN only where the student has BatchNorms (`utils.has_batchnorms`): its ViT and
    # head (use_bn False) have none, and neither do ours
    net = parallel(student, world)
    # after DDP has given every rank rank 0's student, as DINO loads its teacher from `student.module`;
    # DINO builds the teacher without drop path; in eval mode (always, here) drop path is the identity
    teacher = dino.teacher_of(student, build_model(cfg, 0, world.device)).eval()
    # timm's groups are DINO's: no weight decay on biases and 1-d parameters (the student has no exemptions)
    optimizer = create_optimizer_v2(
        student, "adamw", lr=scaled_lr(p), weight_decay=p.weight_decay, eps=p.opt_eps, fused=True
    )
    # by index: loading an optimizer's state replaces its group dicts
    decayed = [i for i, group in enumerate(optimizer.param_groups) if group["weight_decay"] > 0]
    crops = augment.MultiCrop(
        cfg.data.input_size,
        d.global_crops_scale,
        d.local_crop_size,
        d.local_crops_scale,
        d.local_crops_number,
        d.blur_radius,
    )
    loader, sampler = train_loader(cfg, pretraining.train_split(cfg, crops), world)
    steps = len(loader)
    lrs = schedules.cosine(
        scaled_lr(p), p.min_lr, cfg.epochs, steps, p.warmup_epochs, warmup_reaches_base=True
    )
    wds = schedules.cosine(p.weight_decay, d.weight_decay_end, cfg.epochs, steps)
    momenta = schedules.cosine(d.momentum_teacher, 1.0, cfg.epochs, steps)
    teacher_temps = schedules.teacher_temperatures(
        d.warmup_teacher_temp, d.teacher_temp, d.warmup_teacher_temp_epochs, cfg.epochs
    )
    n_crops = dino.GLOBAL_CROPS + d.local_crops_number
    loss_fn = dino.Loss(d.out_dim, n_crops, d.student_temp, d.center_momentum).to(world.device)
    # which crops' maps carry L_se: the global crops (one forward of the backbone) or all of them
    se_crops = (
        [dino.GLOBAL_CROPS] if cfg.loss.crops == "global" else [dino.GLOBAL_CROPS, d.local_crops_number]
    )
    se_crops = [c for c in se_crops if c > 0]
    precision = Precision(cfg.protocol.amp, world.device)

    parts = {
        "model": teacher.backbone,  # the teacher: what downstream runs load
        "student": student,
        "teacher": teacher,
        "loss": loss_fn,  # the centre
        "optimizer": optimizer,
        "precision": precision,
    }
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
        adjust = partial(adjust_gradients, student, p.clip_grad, epoch < d.freeze_last_layer)
        for step, (images, _) in enumerate(loader):
            it = epoch * steps + step
            for group in optimizer.param_groups:
                group["lr"] = lrs[it]
            for i in decayed:
                optimizer.param_groups[i]["weight_decay"] = wds[it]
            images = [image.to(world.device, non_blocking=True) for image in images]
            with precision.autocast():
                with torch.no_grad():
                    teacher_out, _ = teacher(images[: dino.GLOBAL_CROPS])
                student_out, maps = net(images, similarity_crops=sum(se_crops))
                l_ssl = loss_fn(student_out, teacher_out, teacher_temps[epoch])
            l_se = pretraining.spatial_entropy(maps if cfg.loss.sar else [S.detach() for S in maps], se_crops)
            loss = l_ssl + cfg.loss.weight * l_se if cfg.loss.sar else l_ssl
            skipped = optimizer_step(loss, optimizer, net, precision, None, before_update=adjust)
            dino.update_teacher(student, teacher, momenta[it])
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
                        "train/weight_decay": wds[it],
                        "train/momentum": momenta[it],
                    },
                )
            if world.is_main and heartbeat.due():
                heartbeat(epoch=epoch + 1, epochs=cfg.epochs, step=step + 1, steps=steps)
        last = (epoch + 1) * steps - 1
        record = {
            "epoch": epoch + 1,
            **{f"train_{k}": mean(sums[k], sums["steps"]) for k in LOSSES},
            "lr": lrs[last],
            "weight_decay": wds[last],
            "momentum": momenta[last],
            "teacher_temp": teacher_temps[epoch],
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


def adjust_gradients(student: dino.MultiCrop, clip: float | None, freeze_last_layer: bool) -> None:
    """DINO's `clip_gradients` (each parameter's gradient to norm `clip`, without a host sync) and
    `cancel_gradients_last_layer` (no update of the head's last layer while it is frozen)."""
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    if clip and grads:
        norms = torch._foreach_norm(grads)
        torch._foreach_mul_(grads, [torch.clamp(clip / (n + 1e-6), max=1.0) for n in norms])
    if freeze_last_layer:
        for param in student.head.last_layer.parameters():
            param.grad = None


def _cost(cfg: DictConfig, gmacs: Callable[[int], float]) -> float:
    """The student on the global and local crops (trained), the teacher on the global ones (forward)."""
    images, d = estimate.train_images(cfg) * cfg.epochs, cfg.protocol.dino
    full = gmacs(cfg.data.input_size)
    student = 2 * full + d.local_crops_number * gmacs(d.local_crop_size)
    return images * (student * estimate.TRAIN_FLOPS_PER_MAC + 2 * full * estimate.EVAL_FLOPS_PER_MAC)


SPEC = EngineSpec(
    name="dino",
    run=run,
    protocol=DinoProtocol,
    description="DINO self-supervised pre-training, with L_se where the row says (Tab. 9, Fig. 7)",
    consumes=Consumes.nothing,
    provides=Provides.backbone,
    progress=Progress.epoch,
    loss="self-distillation",
    cost=_cost,
    metrics=("ssl_loss", "spatial_entropy"),
)
