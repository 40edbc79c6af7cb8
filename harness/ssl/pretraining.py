"""What the two pre-training engines share: the data of their views, the per-epoch record, L_se of the
maps of the crops that carry it, and the result of a run (no validation: the linear probe and the
Jaccard, downstream runs, measure the backbone)."""

from typing import Any

import torch
from omegaconf import DictConfig

import sar
from harness.core.data import synthetic_config
from harness.core.result import Outcome
from harness.core.steps import step_counts
from harness.data import build_dataset


def train_split(cfg: DictConfig, transform) -> torch.utils.data.Dataset:
    """The run's train split, each image turned into its list of views by `transform`."""
    d = cfg.data
    common = {"root": d.root, "fraction_seed": d.fraction_seed, "synthetic": synthetic_config(cfg)}
    return build_dataset(d.dataset, "train", transform=transform, fraction=d.fraction, **common)


def spatial_entropy(maps: list[torch.Tensor], crops: list[int]) -> torch.Tensor:
    """L_se averaged over crops: each tensor of `maps` holds `crops[i]` crops' maps (stacked along the
    batch), and weighs with that count (weights on the host: no copy to the device)."""
    total = sum(count * sar.spatial_entropy(S) for S, count in zip(maps, crops, strict=True))
    return total / sum(crops)


def outcome(cfg: DictConfig, records: list[dict[str, Any]], state: dict[str, Any]) -> Outcome:
    """A pre-training run's: the last epoch's losses."""
    return Outcome(
        metrics={"ssl_loss": records[-1]["train_ssl"], "spatial_entropy": records[-1]["train_se"]},
        epochs=cfg.epochs,
        wall_time_s=state["wall_time_s"],
        **step_counts(state),
    )
