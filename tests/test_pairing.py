"""A "+ SAR" row and its baseline are paired by seed: under one seed they start from the same weights
(every parameter the two last blocks share) and read the same batches in the same order with the same
augmentation draws, so that the report may judge the gain on the per-seed differences."""

import torch

from harness.core.data import datasets, train_loader
from harness.core.model import build_model
from harness.core.rng import seed_everything
from harness.distributed import World
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


def _pair(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, "seeds=[3]"])
    by_row = {run.rows[0]: run.config for run in runs}
    assert by_row["base"].last_block == "standard" and by_row["sar"].last_block == "sar"
    return by_row["base"], by_row["sar"]


def test_a_seed_gives_both_rows_the_same_initial_weights(tmp_path):
    base, sar = _pair(tmp_path)
    weights = []
    for cfg in (base, sar):
        seed_everything(cfg.seed)
        weights.append(build_model(cfg, 4, torch.device("cpu")).state_dict())
    shared = weights[0].keys() & weights[1].keys()
    assert len(shared) >= len(weights[1]) - 2  # the SAR block drops the LayerNorm before its MLP only
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in shared)


def test_a_seed_gives_both_rows_the_same_batches(tmp_path):
    base, sar = _pair(tmp_path)
    firsts = []
    for cfg in (base, sar):
        seed_everything(cfg.seed)
        loader, sampler = train_loader(cfg, datasets(cfg)[0], World())
        sampler.set_epoch(1)
        firsts.append(next(iter(loader)))
    assert torch.equal(firsts[0][0], firsts[1][0]) and torch.equal(firsts[0][1], firsts[1][1])
