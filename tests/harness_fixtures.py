"""A tiny recipe on the synthetic dataset: trains in seconds on a CPU; and the Slurm tests' cluster check."""

import os
from pathlib import Path

import pytest

TINY = """
defaults:
  - recipe_schema
  - protocol: deit
  - _self_
name: tiny
title: "Tiny: a test table"
reproduces: "nothing: a test recipe"
model: sar_vit_tiny_patch16_224
dataset: synthetic
epochs: 3
seeds: [0]
data:
  input_size: 32
  num_workers: 0
  synthetic: {{num_classes: 4, image_size: 32, train_per_class: 24, val_per_class: 6, seed: 1}}
train: {{progress: false}}
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
runs_root: {runs}
rows:
  - id: base
    label: "ViT-T"
    model_kwargs: {kwargs}
    last_block: standard
    paper: {{top1: 50.0}}
  - id: sar
    label: "ViT-T + SAR"
    model_kwargs: {kwargs}
    last_block: sar
    loss: {{sar: true, weight: 0.01}}
    paper: {{top1: 55.0}}
    baseline: base
"""
TINY_OVERRIDES = ["protocol.batch_size=16", "protocol.warmup_epochs=1"]
# the tiny rows' model; a recipe that consumes their runs must build the same one
TINY_KWARGS = "{img_size: 32, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 3}"


def write_tiny(folder: Path, runs: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(runs=runs, kwargs=TINY_KWARGS))
    return path


def require_cluster(problem: str | None) -> None:
    """Skip a test of the Slurm cluster where `problem` says it is not usable, or fail where CI brought it
    up and requires it (REQUIRE_SLURM=1)."""
    if problem and os.environ.get("REQUIRE_SLURM") == "1":
        pytest.fail(f"REQUIRE_SLURM=1 but {problem}")
    if problem:
        pytest.skip(problem)
