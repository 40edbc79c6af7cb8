"""What a segmentation run reads: ADE20K through the dataset registry, or at local scale the synthetic
objects as object-vs-background label maps (1 on every object, whatever its class, 0 on the background,
255 on the thin void border of the VOC stand-in of `harness.data.standins`, on the train and val splits),
both through the pipelines of PVT's config; and a train loader that can start anywhere inside an epoch (a
run resumed at an iteration).

Object vs background, not each object's class: the background holds most of the pixels, and a per-class
trial still predicted it everywhere partway through the local iterations (docs/local-scale.md, "Tab. 12:
segmentation")."""

import itertools

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from harness import distributed
from harness.core.data import GlobalOrder, per_process_batch, seeded_loader, synthetic_config
from harness.core.job import RunFailed
from harness.data import build_dataset, dataset_spec
from harness.data.standins import SyntheticSegmentation
from harness.segment.transforms import TestPipeline, TrainPipeline

OBJECT, IGNORED = 1, 255


def num_classes(cfg: DictConfig) -> int:
    """The decoder's classes: ADE20K's 150, or background and object."""
    if cfg.data.dataset == "synthetic":
        return 2
    return dataset_spec(cfg.data.dataset).num_classes


class ObjectMasks(Dataset):
    """The synthetic label maps as object (1) vs background (0), void kept, through a pair pipeline."""

    def __init__(self, pairs: SyntheticSegmentation, pipeline) -> None:
        self.pairs, self.pipeline = pairs, pipeline

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        image, labels = self.pairs[index]
        return self.pipeline(image, torch.where((labels > 0) & (labels != IGNORED), OBJECT, labels))


def datasets(cfg: DictConfig) -> tuple[Dataset, Dataset]:
    """The train split through the training pipeline and the val split through the test pipeline."""
    seg = cfg.protocol.segmentation
    train_pipeline = TrainPipeline(
        img_scale=tuple(seg.img_scale),
        ratio_range=tuple(seg.ratio_range),
        crop_size=seg.crop_size,
        cat_max_ratio=seg.cat_max_ratio,
        flip_prob=seg.flip_prob,
        ignore_index=seg.ignore_index,
    )
    test_pipeline = TestPipeline(img_scale=tuple(seg.img_scale), size_divisor=seg.size_divisor)
    if cfg.data.dataset == "synthetic":
        config = synthetic_config(cfg, "ade20k")  # its val split sized as ADE20K's stand-in
        keep_pil = lambda image: image  # the pipelines take PIL images and resize them themselves
        return (
            ObjectMasks(SyntheticSegmentation(config, keep_pil, split="train"), train_pipeline),
            ObjectMasks(SyntheticSegmentation(config, keep_pil, split="val"), test_pipeline),
        )
    root = cfg.data.root
    return (
        build_dataset(cfg.data.dataset, "train", root, train_pipeline),
        build_dataset(cfg.data.dataset, "val", root, test_pipeline),
    )


class ResumableSampler(GlobalOrder):
    """GlobalOrder that starts `skip` samples into its epoch: the order (and so each sample's augmentation)
    is that of the whole epoch, so a run resumed mid-epoch sees what it would have seen."""

    skip = 0

    def __len__(self) -> int:
        return super().__len__() - self.skip

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.skip, None)


def train_loader(cfg: DictConfig, train: Dataset, world: distributed.World) -> tuple[DataLoader, int]:
    """The train loader (set its sampler's epoch and skip before each pass) and the batches per epoch."""
    per_process = per_process_batch(cfg, world)
    order_seed = int(np.random.SeedSequence([cfg.seed % 2**64, 0x5E6]).generate_state(1)[0])
    sampler = ResumableSampler(len(train), cfg.seed, order_seed, world, cfg.protocol.batch_size)
    steps = len(sampler) // per_process
    if steps == 0:
        raise RunFailed(f"the training set ({len(train)} images) is smaller than one batch of {per_process}")
    return seeded_loader(cfg, train, sampler, per_process), steps
