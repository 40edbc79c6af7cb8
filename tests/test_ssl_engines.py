"""The self-supervised engines on a tiny model: a resume in the middle of pre-training continues exactly
(teacher, centre, momentum encoder, optimizer, schedules), the linear probe sees a frozen backbone, and
the Jaccard of Tab. 9b reads the pre-training run's headless backbone."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import RecipeError
from harness.core import checkpoint
from harness.engines import linear_probe, train_run
from harness.recipe import load_recipe
from harness.results import CHECKPOINT, read_metrics, run_dir
from tests.harness_fixtures import TINY_KWARGS
from tests.resumed import assert_equal, checkpoint_states, resumed_like

SSL = """
defaults:
  - recipe_schema
  - _self_
name: {name}
title: "Tiny self-supervision"
reproduces: "nothing: a test recipe"
model: sar_vit_tiny_patch16_224
dataset: imagenet100
epochs: 2
scale: local
metrics: {metrics}
eval: {{metrics: [jaccard], batch_size: 8}}
local:
  epochs_factor: 1.0
  min_epochs: 1
  batch_size: 8
  seeds: [0]
  synthetic: {{num_classes: 4, image_size: 32, train_per_class: 6, val_per_class: 3}}
  local_crop_size: 16
  local_crops_number: 2
  head_out_dim: 32
  head_hidden_dim: 16
train: {{progress: false, tensorboard: false, log_every: 2}}
launcher: {{name: inline}}
runs_root: {runs}
rows:
{rows}
"""
PRETRAINING_ROWS = f"""
  - {{id: dino, label: DINO, engine: dino, protocol: dino, model_kwargs: {TINY_KWARGS}, last_block: sar,
     loss: {{sar: true, weight: 0.01, crops: all}}}}
  - {{id: moco, label: MoCo-v3, engine: mocov3, protocol: mocov3, model_kwargs: {TINY_KWARGS},
     last_block: sar, loss: {{sar: true, weight: 0.01}}}}
"""
DOWNSTREAM_ROWS = f"""
  - {{id: probe, label: probe, engine: linear_probe, protocol: linear_probe_dino,
     from: {{recipe: {{up}}, row: dino}}, model_kwargs: {TINY_KWARGS}, last_block: sar}}
  - {{id: jaccard, label: Jaccard, engine: evaluate, protocol: dino, from: {{recipe: {{up}}, row: dino}},
     model_kwargs: {TINY_KWARGS}, last_block: sar}}
"""


def _recipes(tmp_path: Path) -> tuple[Path, Path]:
    runs = tmp_path / "runs"
    up = tmp_path / "pre.yaml"
    up.write_text(
        SSL.format(name="pre", metrics="[ssl_loss, spatial_entropy]", runs=runs, rows=PRETRAINING_ROWS)
    )
    down = tmp_path / "down.yaml"
    rows = DOWNSTREAM_ROWS.replace("{up}", str(up))
    down.write_text(SSL.format(name="down", metrics="[top1, jaccard]", runs=runs, rows=rows))
    return up, down


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The tiny pre-training runs, trained once for the module."""
    up, down = _recipes(tmp_path_factory.mktemp("ssl"))
    _, runs = load_recipe(up)
    for run in runs:
        train_run(OmegaConf.to_container(run.config), run.uid)
    return up, down, {run.rows[0]: run for run in runs}


@pytest.mark.slow
@pytest.mark.parametrize("row", ["dino", "moco"])
def test_resume_in_the_middle_of_pretraining_is_exact(pretrained, tmp_path, monkeypatch, row):
    _, _, runs = pretrained
    straight = runs[row]
    config = OmegaConf.to_container(straight.config)
    # teacher, centre / momentum encoder, optimizer: bit for bit
    result = resumed_like(straight.folder, config, straight.uid, tmp_path, monkeypatch)
    reference = checkpoint_states(straight.folder / CHECKPOINT)
    assert set(result.metrics) == {"ssl_loss", "spatial_entropy"}
    if row == "dino":
        assert not torch.equal(reference["loss"]["center"], torch.zeros_like(reference["loss"]["center"]))
        teacher = {
            k.removeprefix("backbone."): v
            for k, v in reference["teacher"].items()
            if k.startswith("backbone.")
        }
        assert_equal(reference["model"], teacher, "the checkpoint's model is the teacher's backbone")


@pytest.mark.slow
def test_resume_in_the_middle_of_a_probe_is_exact(pretrained, tmp_path, monkeypatch):
    _, down, _ = pretrained
    probe = next(r for r in load_recipe(down)[1] if r.rows == ["probe"])
    config = {**OmegaConf.to_container(probe.config), "runs_root": str(tmp_path / "straight")}
    straight = train_run(config, probe.uid)
    folder = run_dir(OmegaConf.create(config), probe.uid)
    resumed = resumed_like(folder, config, probe.uid, tmp_path / "resumed", monkeypatch)
    assert resumed.metrics == straight.metrics and resumed.best == straight.best


@pytest.mark.slow
def test_the_teacher_temperature_and_momentum_follow_their_schedules(pretrained):
    _, _, runs = pretrained
    records = read_metrics(runs["dino"].folder)
    # the first two of DINO's 30 warm-up epochs (the recipe's epochs_factor 1 keeps them)
    assert [r["teacher_temp"] for r in records] == pytest.approx([0.04, 0.04 + 0.03 / 29])
    assert records[0]["momentum"] < records[1]["momentum"] < 1.0
    assert all(r["skipped_steps"] == 0 for r in records)


@pytest.mark.slow
def test_the_probe_sees_a_frozen_backbone(pretrained, monkeypatch):
    _, down, runs = pretrained
    _, probes = load_recipe(down)
    probe = next(r for r in probes if r.rows == ["probe"])
    seen = {}
    real = linear_probe.Features.forward

    def spy(self, x):
        out = real(self, x)
        seen["requires_grad"] = out.requires_grad
        seen["backbone"] = self.backbone
        return out

    monkeypatch.setattr(linear_probe.Features, "forward", spy)
    result = train_run(OmegaConf.to_container(probe.config), probe.uid)
    backbone = seen["backbone"]
    assert seen["requires_grad"] is False and not backbone.training
    assert all(not p.requires_grad and p.grad is None for p in backbone.parameters())
    upstream = checkpoint.load(runs["dino"].folder / CHECKPOINT, "test")["model"]
    assert_equal(backbone.state_dict(), upstream, "the backbone is unchanged by probing")
    assert 0 <= result.metrics["top1"] <= 100 and result.extra.features == "last4"
    saved = checkpoint.load(probe.folder / CHECKPOINT, "test")
    assert set(saved["classifier"]) == {"weight", "bias"}
    assert saved["classifier"]["weight"].shape == (4, 2 * 48)  # the [CLS] of every block: there are 2


@pytest.mark.slow
def test_the_jaccard_reads_the_headless_backbone(pretrained):
    _, down, _ = pretrained
    _, runs = load_recipe(down)
    evaluation = next(r for r in runs if r.rows == ["jaccard"])
    assert evaluation.config.upstream.engine == "dino"
    result = train_run(OmegaConf.to_container(evaluation.config), evaluation.uid)
    assert 0 < result.metrics["jaccard"] <= 100


def test_recipe_errors_name_the_key(tmp_path):
    up, down = _recipes(tmp_path)
    with pytest.raises(RecipeError, match=r"key 'protocol'.*'probe' section"):
        load_recipe(down, ["protocol=dino"])
    with pytest.raises(RecipeError, match=r"key 'loss.crops'"):
        load_recipe(up, ["loss.crops=some"])
    with pytest.raises(RecipeError, match=r"key 'from.checkpoint'.*no best"):
        load_recipe(down, ["upstream.checkpoint=best"])
