"""Loaders whose numbers do not depend on the worker count or the process count and resume bit-for-bit:
the shuffle is seeded by (run seed, epoch), each sample's augmentation by (run seed, epoch, dataset index,
copy) (`GlobalOrder`), and the loaders draw their workers' base seeds from their own generators, not the
global torch RNG (which the model's drop-path uses, and which a persistent-worker loader would otherwise
draw from once per process, a single-process one once per epoch). Also the transforms, Mixup and the
criterion of a protocol."""

import dataclasses
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from harness import distributed
from harness.core.job import RunFailed
from harness.core.rng import seeded
from harness.data import SyntheticConfig, build_dataset, dataset_spec


class GlobalOrder(Sampler):
    """This rank's share of the epoch's one global order, as (index, key) pairs.

    The order depends on (order seed, epoch) only: a permutation of the dataset (each index `repeats` times in
    a row under repeated augmentation), cut to `selected` samples (the dataset's size unless given, as in
    DeiT's RASampler), then to whole global batches of `batch`
    (`drop_last`) or padded with its first samples to a multiple of the world size (the probes' codes train
    on the last partial batch, as DistributedSampler pads). Rank r takes positions r, r + size, ...: a global
    batch is the same samples on any number of processes. The key, (run seed, epoch, index, copy), seeds the
    sample's augmentation in `SeededDataset` (not the worker that loads it: torch seeds a persistent worker
    once); `copy` numbers an index's repeats, so that each gets its own draw."""

    def __init__(
        self,
        size: int,
        seed: int,
        order_seed: int,
        world: distributed.World,
        batch: int | None,
        repeats: int = 1,
        selected: int | None = None,
    ) -> None:
        self.size, self.seed, self.order_seed, self.world = size, seed, order_seed, world
        self.repeats, self.epoch = repeats, 0
        total = min(size * repeats, size if selected is None else selected)
        if batch is not None:
            self.total = total // batch * batch
        else:
            self.total = -(-total // world.size) * world.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.total // self.world.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.order_seed + self.epoch)  # as DistributedSampler
        order = torch.randperm(self.size, generator=generator).repeat_interleave(self.repeats)
        copies = torch.arange(self.repeats).repeat(self.size)
        padding = max(self.total - len(order), 0)
        order = torch.cat([order, order[:padding]])[: self.total]
        copies = torch.cat([copies, copies[:padding] + self.repeats])[: self.total]
        share = slice(self.world.rank, None, self.world.size)
        for index, copy in zip(order[share].tolist(), copies[share].tolist(), strict=True):
            yield index, (self.seed, self.epoch, index, copy)


class SeededDataset(Dataset):
    """Loads `dataset[index]` (transform included) under the global RNGs seeded from the sampler's key."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, tuple[int, ...]]) -> Any:
        index, key = item
        with seeded(*key):
            return self.dataset[index]


def eval_transform(cfg: DictConfig, input_size: int | None = None):
    """Resize to input_size / crop_pct, centre crop, normalise: DeiT's evaluation."""
    size = input_size or cfg.data.input_size
    return create_transform(size, is_training=False, interpolation="bicubic", crop_pct=cfg.protocol.crop_pct)


def synthetic_config(cfg: DictConfig, stand_in: str | None = None) -> SyntheticConfig:
    """The run's synthetic dataset; for `stand_in` (an evaluation stand-in's name), its val split sized by
    `eval.standin_per_class` where that names it."""
    config = SyntheticConfig(**OmegaConf.to_container(cfg.data.synthetic))
    per_class = None if stand_in is None else cfg.eval.standin_per_class.get(stand_in)
    return config if per_class is None else dataclasses.replace(config, val_per_class=per_class)


def datasets(cfg: DictConfig) -> tuple[Dataset, Dataset]:
    """The run's train split (augmented as its protocol says) and val split."""
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
    common = {"root": d.root, "fraction_seed": d.fraction_seed, "synthetic": synthetic_config(cfg)}
    train = build_dataset(d.dataset, "train", transform=train_tf, fraction=d.fraction, **common)
    val = build_dataset(d.dataset, "val", transform=eval_transform(cfg), **common)
    return train, val


def num_classes(cfg: DictConfig) -> int:
    if cfg.data.dataset == "synthetic":
        return cfg.data.synthetic.num_classes
    return dataset_spec(cfg.data.dataset).num_classes


def eval_loader(dataset: Dataset, batch_size: int, workers: int, world: distributed.World) -> DataLoader:
    """This rank's share of `dataset`: images rank, rank + size, ..., so uneven shares, not padded as
    DistributedSampler pads, and every image counted once; callers sum counts over the ranks, not means."""
    part = Subset(dataset, range(world.rank, len(dataset), world.size))
    return DataLoader(
        part, batch_size, shuffle=False, num_workers=workers, generator=torch.Generator().manual_seed(0)
    )


def per_process_batch(cfg: DictConfig, world: distributed.World) -> int:
    """Each process's share of protocol.batch_size (the total over all processes)."""
    if cfg.protocol.batch_size % world.size:
        raise RunFailed(
            f"protocol.batch_size {cfg.protocol.batch_size} is not divisible by {world.size} processes"
        )
    return cfg.protocol.batch_size // world.size


def seeded_loader(
    cfg: DictConfig, train: Dataset, sampler: Sampler, per_process: int, drop_last: bool = True
) -> DataLoader:
    """A training DataLoader whose samples are seeded by their key (SeededDataset, `sampler` a GlobalOrder),
    so that its numbers do not depend on the worker count."""
    workers = cfg.data.num_workers
    return DataLoader(
        SeededDataset(train),
        per_process,
        sampler=sampler,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def train_loader(
    cfg: DictConfig, train: Dataset, world: distributed.World, drop_last: bool = True
) -> tuple[DataLoader, GlobalOrder]:
    """The train loader and its sampler (whose `set_epoch` each epoch calls). `drop_last`: the last
    partial batch is dropped (every pre-training code) or trained on (the linear probes' codes)."""
    per_process = per_process_batch(cfg, world)
    # the same on every rank; hashed, since samplers seed with seed + epoch and runs' seeds are 0, 1, 2...
    order_seed = int(np.random.SeedSequence([cfg.seed % 2**64, 0x5A3]).generate_state(1)[0])
    batch = cfg.protocol.batch_size if drop_last else None
    if cfg.protocol.repeated_aug:
        # DeiT's RASampler: 3 copies of each image, each epoch len(train) of them rounded down to a multiple
        # of 256 (not rounded below 256: that would empty a tiny dataset)
        selected = len(train) // 256 * 256 or len(train)
        sampler = GlobalOrder(len(train), cfg.seed, order_seed, world, batch, repeats=3, selected=selected)
    else:
        sampler = GlobalOrder(len(train), cfg.seed, order_seed, world, batch)
    loader = seeded_loader(cfg, train, sampler, per_process, drop_last)
    if len(loader) == 0:
        raise RunFailed(f"the training set ({len(train)} images) is smaller than one batch of {per_process}")
    return loader, sampler


def mixup(protocol: DictConfig, classes: int) -> Mixup | None:
    p = protocol
    if p.mixup <= 0 and p.cutmix <= 0:
        return None
    return Mixup(
        mixup_alpha=p.mixup,
        cutmix_alpha=p.cutmix,
        prob=p.mixup_prob,
        switch_prob=p.mixup_switch_prob,
        mode="batch",
        label_smoothing=p.smoothing,
        num_classes=classes,
    )


def criterion(protocol: DictConfig, mixup_fn: Mixup | None) -> nn.Module:
    if mixup_fn is not None:
        return SoftTargetCrossEntropy()
    if protocol.smoothing > 0:
        return LabelSmoothingCrossEntropy(protocol.smoothing)
    return nn.CrossEntropyLoss()
