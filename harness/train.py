"""The supervised engine (Appendix D): each architecture's original protocol, via timm, plus SAR.

L_tot = L_ce + lambda * L_se (Eq. 9), L_se from `sar.spatial_entropy` on the last block's similarity maps.
Every epoch appends one line to metrics.jsonl and writes an atomic checkpoint holding everything needed
to continue bit-for-bit (model, optimizer, scheduler, RNG states, the metric records); starting a run
whose checkpoint exists resumes it, and each epoch appears once in the log however often it was killed.
"""

import contextlib
import math
import os
import random
import socket
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup, create_transform
from timm.data.distributed_sampler import RepeatAugSampler
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

import sar
from harness import distributed
from harness.data import SyntheticConfig, build_dataset, dataset_spec
from harness.lifecycle import RunLocked, trainer_lock
from harness.provenance import provenance, record_start
from harness.results import (
    append_metrics,
    atomic_write_json,
    rewrite_metrics,
    run_dir,
    touch_heartbeat,
    write_config,
)

CHECKPOINT = "checkpoint.pt"


class RunFailed(RuntimeError):
    """The run cannot go on (e.g. the loss stayed non-finite); the reason lands in failure.json."""


class WithSimilarity(nn.Module):
    """Makes `forward` return (logits, S), so that DDP sees the SAR forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_similarity(x)


def _rng_state() -> dict[str, Any]:
    # numpy's global generator is what timm's Mixup draws from, so it is part of the state to restore
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, cached]},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["gauss"][0], np_state["gauss"][1]))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (timm's Mixup uses the global generator)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _seeded(*key: int):
    """Python's, numpy's and torch's global generators seeded from `key`, restored afterwards."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    words = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(6)  # distinct seed per generator
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words[2:4])  # noqa: NPY002
    torch.default_generator.manual_seed(int(words[4]) << 32 | int(words[5]))  # CPU only: cheaper
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])  # noqa: NPY002
        torch.set_rng_state(saved[2])


class _SeededSampler(Sampler):
    """Yields (index, key), key = (run seed, epoch, rank, position in this rank's epoch): the key, not
    the worker that loads it (torch seeds a persistent worker once, when the process first iterates),
    seeds the sample's augmentation in `_SeededDataset`. Position, not index: repeated augmentation loads
    an index several times an epoch, each time with its own draw."""

    def __init__(self, sampler: Sampler, seed: int, rank: int) -> None:
        self.sampler, self.seed, self.rank, self.epoch = sampler, seed, rank, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for position, index in enumerate(self.sampler):
            yield index, (self.seed, self.epoch, self.rank, position)


class _SeededDataset(Dataset):
    """Loads `dataset[index]` (transform included) under the global RNGs seeded from the sampler's key."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, tuple[int, ...]]) -> Any:
        index, key = item
        with _seeded(*key):
            return self.dataset[index]


class _SeededRepeatAugSampler(RepeatAugSampler):
    """timm's RepeatAugSampler shuffles with `manual_seed(epoch)` whatever the run's seed; this one with
    seed + epoch, as DistributedSampler does."""

    def __init__(self, *args, seed: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(self.seed + epoch)


def _datasets(cfg: DictConfig):
    p, d = cfg.protocol, cfg.data
    train_tf = create_transform(
        d.input_size,
        is_training=True,
        color_jitter=p.color_jitter,
        auto_augment=p.auto_augment,
        interpolation=p.interpolation,
        re_prob=p.reprob,
        re_mode="pixel",
        re_count=1,
    )
    eval_tf = create_transform(d.input_size, is_training=False, interpolation="bicubic", crop_pct=p.crop_pct)
    synthetic = SyntheticConfig(**OmegaConf.to_container(d.synthetic))
    common = {"root": d.root, "fraction_seed": d.fraction_seed, "synthetic": synthetic}
    train = build_dataset(d.dataset, "train", transform=train_tf, fraction=d.fraction, **common)
    val = build_dataset(d.dataset, "val", transform=eval_tf, **common)
    return train, val


def _num_classes(cfg: DictConfig) -> int:
    return (
        cfg.data.synthetic.num_classes
        if cfg.data.dataset == "synthetic"
        else dataset_spec(cfg.data.dataset).num_classes
    )


def _loaders(cfg: DictConfig, world: distributed.World):
    """The train loader (with its sampler, whose `set_epoch` each epoch calls) and the val loader.

    Resume is bit-for-bit, and a run's numbers are the same for every `data.num_workers`: the shuffle is
    seeded by (run seed, epoch), each sample's augmentation by (run seed, epoch, rank, position)
    (`_SeededSampler`), and the loaders draw their workers' base seeds from their own generators, not the
    global torch RNG (which the model's drop-path uses, and which a persistent-worker loader would
    otherwise draw from once per process, a single-process one once per epoch).
    """
    train, val = _datasets(cfg)
    if cfg.protocol.batch_size % world.size:
        raise RunFailed(
            f"protocol.batch_size {cfg.protocol.batch_size} is not divisible by {world.size} processes"
        )
    per_process = cfg.protocol.batch_size // world.size
    # the same on every rank; hashed, since samplers seed with seed + epoch and runs' seeds are 0, 1, 2...
    order_seed = int(np.random.SeedSequence([cfg.seed % 2**64, 0x5A3]).generate_state(1)[0])
    if cfg.protocol.repeated_aug:
        # DeiT rounds each epoch down to a multiple of 256 images, which would empty a tiny dataset
        rounding = 256 if len(train) >= 256 * world.size else 0
        order: Sampler = _SeededRepeatAugSampler(
            train, world.size, world.rank, shuffle=True, selected_round=rounding, seed=order_seed
        )
    else:
        order = DistributedSampler(
            train, world.size, world.rank, shuffle=True, seed=order_seed, drop_last=True
        )
    sampler = _SeededSampler(order, cfg.seed, world.rank)
    workers = cfg.data.num_workers
    train_loader = DataLoader(
        _SeededDataset(train),
        per_process,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    if len(train_loader) == 0:
        raise RunFailed(f"the training set ({len(train)} images) is smaller than one batch of {per_process}")
    val_part = Subset(val, range(world.rank, len(val), world.size))
    val_loader = DataLoader(
        val_part, per_process, shuffle=False, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )
    return train_loader, sampler, val_loader


def _mixup(cfg: DictConfig, num_classes: int) -> Mixup | None:
    p = cfg.protocol
    if p.mixup <= 0 and p.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=p.mixup,
        cutmix_alpha=p.cutmix,
        prob=p.mixup_prob,
        switch_prob=p.mixup_switch_prob,
        mode="batch",
        label_smoothing=p.smoothing,
        num_classes=num_classes,
    )


def _aux_loss(cfg: DictConfig, S: torch.Tensor) -> torch.Tensor:
    return sar.tv_loss(S) if cfg.loss.variant == "tv" else sar.spatial_entropy(S)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Heartbeat:
    """Says the trainer is alive, and where it is, at most every `every_s` seconds during an epoch."""

    def __init__(self, folder: Path, job_id: str, every_s: float) -> None:
        self.folder, self.job_id, self.every_s, self.last = folder, job_id, every_s, time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def __call__(self, **progress: float) -> None:
        self.last = time.monotonic()
        touch_heartbeat(self.folder, self.job_id, **progress)


def train_one_epoch(
    cfg, model, loader, optimizer, mixup_fn, criterion, world, epoch, state, heartbeat
) -> dict[str, float]:
    model.train()
    device = world.device
    totals = {"loss": 0.0, "ce": 0.0, "aux": 0.0, "steps": 0, "skipped": 0, "images": 0}
    start = time.perf_counter()
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            images, targets = mixup_fn(images, targets)
        with _autocast(device):
            logits, S = model(images)
        ce = criterion(logits.float(), targets)
        aux = _aux_loss(cfg, S if cfg.loss.sar else S.detach())
        loss = ce + cfg.loss.weight * aux if cfg.loss.sar else ce
        finite = distributed.all_sum([float(not torch.isfinite(loss).item())], world)[0] == 0
        optimizer.zero_grad(set_to_none=True)
        if not finite:  # every process skips the same step, so DDP stays in step
            state["nonfinite_in_a_row"] += 1
            totals["skipped"] += 1
            if state["nonfinite_in_a_row"] >= cfg.train.max_nonfinite_steps:
                raise RunFailed(
                    f"the loss was non-finite for {state['nonfinite_in_a_row']} steps in a row"
                    f" (epoch {epoch}); last: ce={ce.item()}, aux={aux.item()}"
                )
            continue
        state["nonfinite_in_a_row"] = 0
        loss.backward()
        if cfg.protocol.clip_grad:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.protocol.clip_grad)
        optimizer.step()
        totals["loss"] += loss.item()
        totals["ce"] += ce.item()
        totals["aux"] += aux.item()
        totals["steps"] += 1
        totals["images"] += images.shape[0]
        if world.is_main and heartbeat.due():
            rate = totals["images"] * world.size / (time.perf_counter() - start)
            heartbeat(
                epoch=epoch, epochs=cfg.epochs, step=totals["steps"], steps=len(loader), images_per_s=rate
            )
    seconds = time.perf_counter() - start
    loss_sum, ce_sum, aux_sum, steps, images_seen, skipped = distributed.all_sum(
        [totals["loss"], totals["ce"], totals["aux"], totals["steps"], totals["images"], totals["skipped"]],
        world,
    )
    return {
        "train_loss": loss_sum / steps if steps else math.nan,
        "train_ce": ce_sum / steps if steps else math.nan,
        f"train_{'tv' if cfg.loss.variant == 'tv' else 'se'}": aux_sum / steps if steps else math.nan,
        "images_per_s": images_seen / seconds if seconds else math.nan,
        "train_seconds": seconds,
        "skipped_steps": int(skipped // world.size),
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader, world: distributed.World) -> dict[str, float]:
    model.eval()
    correct1 = correct5 = count = 0.0
    for images, targets in loader:
        images, targets = images.to(world.device), targets.to(world.device)
        with _autocast(world.device):
            logits = model(images)
        top5 = logits.float().topk(min(5, logits.shape[1]), dim=1).indices
        hits = top5 == targets[:, None]
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        count += targets.shape[0]
    correct1, correct5, count = distributed.all_sum([correct1, correct5, count], world)
    return {"val_top1": 100 * correct1 / count, "val_top5": 100 * correct5 / count}


def _save_checkpoint(folder: Path, payload: dict[str, Any]) -> None:
    tmp = folder / f".{CHECKPOINT}.tmp"
    torch.save(payload, tmp)
    tmp.replace(folder / CHECKPOINT)


def train_run(config: dict[str, Any], uid: str) -> dict[str, Any]:
    """Train one resolved run (a `harness.config.schema.Run` as a dict); returns its result.json content."""
    cfg = OmegaConf.create(config)
    world = distributed.setup()
    folder = run_dir(cfg, uid)
    try:
        with _exclusive(folder, world, cfg):
            return _train(cfg, uid, world, folder)
    except RunLocked:
        raise  # the live trainer's folder is not this process's to write in
    except Exception as error:  # every rank says why it stopped; the first to fail is the cause
        reason = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {error}"
        name = "failure.json" if world.is_main else f"failure-rank{world.rank}.json"
        record = {"reason": reason, "rank": world.rank, "host": socket.gethostname(), "time": time.time()}
        atomic_write_json(folder / name, {**record, "traceback": traceback.format_exc()})
        raise
    finally:
        distributed.teardown()


@contextlib.contextmanager
def _exclusive(folder: Path, world: distributed.World, cfg: DictConfig) -> Iterator[None]:
    """Rank 0 holds the run's trainer lock for the whole run; every rank learns whether it got it."""
    with contextlib.ExitStack() as stack:
        refused: RunLocked | None = None
        if world.is_main:
            launcher = "slurm" if "SLURM_JOB_ID" in os.environ else cfg.launcher.name
            try:
                stack.enter_context(trainer_lock(folder, world.job_id, launcher))
            except RunLocked as error:
                refused = error
        if distributed.all_sum([float(refused is not None)], world)[0]:
            raise refused or RunLocked(f"{folder}: rank 0 found another live trainer")
        yield


def _train(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> dict[str, Any]:
    if world.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        for failure in folder.glob("failure*.json"):
            failure.unlink()
        write_config(folder, cfg)
        touch_heartbeat(folder, world.job_id)
    _seed_everything(cfg.seed + world.rank)
    num_classes = _num_classes(cfg)
    model = timm.create_model(
        cfg.model,
        num_classes=num_classes,
        last_block=cfg.last_block,
        drop_path_rate=cfg.protocol.drop_path,
        **OmegaConf.to_container(cfg.model_kwargs),
    ).to(world.device)
    train_model: nn.Module = WithSimilarity(model)
    if world.size > 1:
        ids = [world.local_rank] if world.device.type == "cuda" else None
        train_model = DistributedDataParallel(train_model, device_ids=ids)
    p = cfg.protocol
    lr = p.lr * p.batch_size / p.lr_batch_ref if p.lr_batch_ref else p.lr
    optimizer = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=p.weight_decay, eps=p.opt_eps)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=cfg.epochs,
        lr_min=p.min_lr,
        warmup_t=p.warmup_epochs,
        warmup_lr_init=p.warmup_lr,
        cycle_limit=1,
        t_in_epochs=True,
    )
    train_loader, sampler, val_loader = _loaders(cfg, world)
    mixup_fn = _mixup(cfg, num_classes)
    if mixup_fn is not None:
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif p.smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(p.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()

    records: list[dict[str, Any]] = []
    state = {"nonfinite_in_a_row": 0, "wall_time_s": 0.0}
    start_epoch = 0
    checkpoint_path = folder / CHECKPOINT
    ckpt = (
        torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if checkpoint_path.exists()
        else None
    )
    if world.is_main:  # before the checkpoint is used: a resume on other code is refused
        record_start(folder, world.job_id, ckpt["epoch"] if ckpt else 0, cfg.train.allow_code_change)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        records, start_epoch = ckpt["records"], ckpt["epoch"]
        state.update(ckpt["state"])
        _set_rng_state(ckpt["rng"][world.rank] if world.rank < len(ckpt["rng"]) else ckpt["rng"][0])
        if world.is_main:
            rewrite_metrics(folder, records)  # drop any line logged after this checkpoint

    heartbeat = _Heartbeat(folder, world.job_id, cfg.train.heartbeat_every_s)
    for epoch in range(start_epoch, cfg.epochs):
        begin = time.perf_counter()
        scheduler.step(epoch)
        sampler.set_epoch(epoch)
        stats = train_one_epoch(
            cfg,
            train_model,
            train_loader,
            optimizer,
            mixup_fn,
            criterion,
            world,
            epoch + 1,
            state,
            heartbeat=heartbeat,
        )
        record = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], **stats}
        if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.epochs:
            record.update(evaluate(model, val_loader, world))
        record["seconds"] = time.perf_counter() - begin
        state["wall_time_s"] += record["seconds"]
        records.append(record)
        rng = [_rng_state()]
        if world.size > 1:
            gathered: list[Any] = [None] * world.size
            torch.distributed.all_gather_object(gathered, rng[0])
            rng = gathered
        if world.is_main:
            append_metrics(folder, record)
            _save_checkpoint(
                folder,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "epoch": epoch + 1,
                    "records": records,
                    "state": dict(state),
                    "rng": rng,
                },
            )
            heartbeat(
                epoch=epoch + 1,
                epochs=cfg.epochs,
                step=len(train_loader),
                steps=len(train_loader),
                images_per_s=record["images_per_s"],
            )
    result = _result(cfg, uid, records, state, world)
    if world.is_main:
        atomic_write_json(folder / "result.json", result)
    return result


def _result(cfg, uid, records, state, world) -> dict[str, Any]:
    evaluated = [r for r in records if "val_top1" in r]
    best = max(evaluated, key=lambda r: r["val_top1"])
    gpus = world.size if torch.cuda.is_available() else 0
    return {
        "uid": uid,
        "table": cfg.table,
        "scale": cfg.scale,
        "final_top1": records[-1]["val_top1"],
        "final_top5": records[-1]["val_top5"],
        "best_top1": best["val_top1"],
        "best_epoch": best["epoch"],
        "epochs": cfg.epochs,
        "wall_time_s": state["wall_time_s"],
        "gpu_hours": state["wall_time_s"] * gpus / 3600,
        "skipped_steps": sum(r["skipped_steps"] for r in records),
        "provenance": provenance(world.size, cfg.seed, cfg.recipe_file, cfg.recipe_sha256),
    }
