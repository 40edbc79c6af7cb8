"""The engines and what they share: fine-tuning by Appendix D.3's rules, evaluation runs on the synthetic
stand-ins, checkpoints refused by key, per-iteration schedules, TensorBoard curves, and a training step
that never waits for the host."""

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import sar  # noqa: F401  (registers the models)
from harness import distributed
from harness.config import RECIPES_DIR, RecipeError
from harness.core import checkpoint
from harness.core import data as core_data
from harness.core.resume import Resumable
from harness.core.schedule import LrSchedule, evaluates_at, loss_weight
from harness.engines import evaluate, supervised, train_run
from harness.eval import CORRUPTIONS
from harness.recipe import load_recipe
from harness.results import BEST_CHECKPOINT, CHECKPOINT, read_metrics, read_result
from tests.harness_fixtures import TINY_KWARGS, TINY_OVERRIDES, write_tiny
from tests.resumed import assert_equal, checkpoint_states, resumed_like

DOWNSTREAM = """
defaults:
  - recipe_schema
  - protocol: deit
  - _self_
name: {name}
title: "Downstream"
reproduces: "nothing: a test recipe"
engine: {engine}
model: sar_vit_tiny_patch16_224
dataset: synthetic
epochs: 2
seeds: [0]
metrics: {metrics}
data:
  input_size: 32
  num_workers: 0
  synthetic: {{num_classes: {classes}, image_size: 32, train_per_class: 12, val_per_class: 4, seed: 9}}
eval: {{metrics: {eval_metrics}, batch_size: 8}}
protocol: {{batch_size: 16, warmup_epochs: 1}}
train: {{progress: false}}
resources: {{gpus_per_node: 0}}
launcher: {{name: inline}}
runs_root: {runs}
rows:
  - id: {row}
    label: "{row}"
    from: {{recipe: {upstream}, row: {upstream_row}}}
    model_kwargs: {kwargs}
    last_block: {last_block}
"""


def _downstream(tmp_path: Path, upstream: Path, **fields) -> Path:
    values = {
        "name": "down",
        "engine": "finetune",
        "metrics": "[top1]",
        "classes": 6,
        "eval_metrics": "[]",
        "runs": tmp_path / "runs",
        "row": "ft",
        "upstream": upstream,
        "upstream_row": "base",
        "kwargs": TINY_KWARGS,
        "last_block": "standard",
        **fields,
    }
    path = tmp_path / f"{values['name']}.yaml"
    path.write_text(DOWNSTREAM.format(**values))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recipe's two rows trained for 2 epochs, once for the module."""
    folder = tmp_path_factory.mktemp("upstream")
    recipe = write_tiny(folder, folder / "runs")
    # TINY_OVERRIDES written into the recipe: downstream recipes resolve it without overrides
    text = recipe.read_text().replace("epochs: 3", "epochs: 2")
    recipe.write_text(text + "protocol: {batch_size: 16, warmup_epochs: 1}\n")
    _, runs = load_recipe(recipe)
    for run in runs:
        train_run(OmegaConf.to_container(run.config), run.uid)
    return folder, recipe, {run.rows[0]: run for run in runs}


@pytest.mark.slow
def test_finetune_takes_the_backbone_and_a_new_head(tmp_path, trained, monkeypatch):
    folder, upstream_recipe, upstream = trained
    recipe = _downstream(folder, upstream_recipe, name="ft1")
    _, runs = load_recipe(recipe, ["upstream.checkpoint=final"])
    (run,) = runs
    assert run.upstream.uid == upstream["base"].uid and run.config.upstream.folder == str(
        upstream["base"].folder
    )
    weights = torch.load(upstream["base"].folder / CHECKPOINT, weights_only=True)["model"]
    seen = {}
    real = supervised.run

    def spy(cfg, uid, world, folder, init=None):
        model = timm.create_model(cfg.model, num_classes=6, last_block="standard", **cfg.model_kwargs)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        init(model)
        seen["after"], seen["before"] = model.state_dict(), before
        return real(cfg, uid, world, folder, init=init)

    monkeypatch.setattr(supervised, "run", spy)
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    after, before = seen["after"], seen["before"]
    for key, value in after.items():
        if key.startswith("head."):  # the new head: 6 classes, as the model initialised it
            assert value.shape[0] == 6 and torch.equal(value, before[key]), key
        else:  # everything else is the upstream's backbone, bit for bit
            assert torch.equal(value, weights[key]), key
    assert result.engine == "finetune" and 0 <= result.metrics["top1"] <= 100
    records = read_metrics(run.folder)
    assert [r["epoch"] for r in records] == [1, 2] and records[0]["lr"] > 0


@pytest.mark.slow
def test_finetune_from_best_is_another_run_of_the_best_checkpoint(trained):
    folder, upstream_recipe, upstream = trained
    recipe = _downstream(folder, upstream_recipe, name="ft2")
    (final,) = load_recipe(recipe)[1]
    (best,) = load_recipe(recipe, ["upstream.checkpoint=best"])[1]
    assert best.uid != final.uid and best.upstream.uid == final.upstream.uid
    saved = torch.load(upstream["base"].folder / BEST_CHECKPOINT, weights_only=True)
    metrics = read_metrics(upstream["base"].folder)
    assert saved["top1"] == max(r["val_top1"] for r in metrics)
    assert saved["epoch"] == max(metrics, key=lambda r: r["val_top1"])["epoch"]


@pytest.mark.slow
def test_a_row_keeps_the_upstream_architecture(trained):
    folder, upstream_recipe, _ = trained
    recipe = _downstream(folder, upstream_recipe, name="ft3", last_block="sar")
    with pytest.raises(RecipeError, match=r"last_block.*'sar'.*row 'base'.*'standard'"):
        load_recipe(recipe)


def test_checkpoint_that_does_not_fit_is_refused_with_its_keys():
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3}
    sar_model = timm.create_model("sar_vit_tiny_patch16_224", last_block="sar", **kwargs)
    standard = timm.create_model("sar_vit_tiny_patch16_224", last_block="standard", **kwargs)
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"missing from the checkpoint: .*norm2\.weight"):
        checkpoint.load_weights(standard, sar_model.state_dict(), "a SAR checkpoint")
    other = timm.create_model("sar_vit_tiny_patch16_224", num_classes=7, last_block="standard", **kwargs)
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"head\.weight \(7, 48\) vs \(1000, 48\)"):
        checkpoint.load_weights(standard, other.state_dict(), "a 7-class checkpoint")
    checkpoint.load_weights(
        standard, other.state_dict(), "backbone", skip=checkpoint.classifier_keys(standard)
    )


def test_an_upstream_checkpoint_that_does_not_fit_is_refused_naming_run_file_and_keys(tmp_path):
    kwargs = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3}
    sar_model = timm.create_model("sar_vit_tiny_patch16_224", last_block="sar", **kwargs)
    checkpoint.save(tmp_path / CHECKPOINT, {"model": sar_model.state_dict()})
    upstream = OmegaConf.create(
        {"folder": str(tmp_path), "checkpoint": "final", "uid": "abc", "row": "sar", "recipe": "up.yaml"}
    )
    standard = timm.create_model("sar_vit_tiny_patch16_224", last_block="standard", **kwargs)
    said = rf"upstream run abc \(row 'sar' of up.yaml\): {tmp_path / CHECKPOINT} does not fit .*norm2\.weight"
    with pytest.raises(checkpoint.CheckpointMismatch, match=said):
        checkpoint.load_upstream(standard, upstream)
    checkpoint.load_upstream(sar_model, upstream, skip=checkpoint.classifier_keys(sar_model))
    with pytest.raises(FileNotFoundError, match=rf"upstream run abc .*{tmp_path / BEST_CHECKPOINT} does not"):
        checkpoint.load_upstream(sar_model, OmegaConf.merge(upstream, {"checkpoint": "best"}))


def _step(parts: dict[str, Any]) -> None:
    """A training step that draws its batch from the global generator."""
    loss = parts["model"](torch.randn(4, 3)).square().mean()
    parts["optimizer"].zero_grad()
    loss.backward()
    parts["optimizer"].step()


def _parts(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    return {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)}


def test_a_checkpoint_restores_every_part_it_saved_and_refuses_one_without_a_part(tmp_path):
    cfg, world = OmegaConf.create({"train": {"allow_code_change": False}}), distributed.World()
    straight = _parts(0)
    assert Resumable(tmp_path, world, straight).resume(cfg, "run", {}) == ([], 0)  # a fresh start
    _step(straight)
    Resumable(tmp_path, world, straight).save(1, [{"epoch": 1}], {"steps": 1})
    _step(straight)
    resumed, state = _parts(1), {"steps": 0}
    assert Resumable(tmp_path, world, resumed).resume(cfg, "run", state) == ([{"epoch": 1}], 1)
    _step(resumed)  # the same batch: the random streams resumed too
    assert state == {"steps": 1}
    for key, part in straight.items():
        assert_equal(resumed[key].state_dict(), part.state_dict(), key)
    grown = {**_parts(2), "ema": torch.nn.Linear(3, 2)}
    said = rf"run: checkpoint {tmp_path / CHECKPOINT} has no ema \(it holds epoch, model, optimizer, records"
    with pytest.raises(checkpoint.CheckpointMismatch, match=said):
        Resumable(tmp_path, world, grown).resume(cfg, "run", {})


def test_a_resumed_supervised_run_with_ema_and_drloc_is_the_uninterrupted_one(tmp_path, monkeypatch):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=2", "protocol.model_ema_decay=0.5", "train.tensorboard=false"]
    overrides += ["loss.drloc_weight=0.1", "loss.drloc_pairs=8"]
    (run,) = [r for r in load_recipe(recipe, overrides)[1] if r.rows == ["sar"]]
    config = OmegaConf.to_container(run.config)
    straight = train_run(config, run.uid)
    assert {"model", "drloc", "ema", "optimizer", "schedule", "precision"} <= set(
        checkpoint_states(run.folder / CHECKPOINT)
    )
    resumed = resumed_like(run.folder, config, run.uid, tmp_path / "again", monkeypatch)
    assert (resumed.metrics, resumed.best, resumed.extra) == (straight.metrics, straight.best, straight.extra)


@pytest.mark.slow
def test_evaluate_measures_every_metric_on_the_stand_ins(trained, tmp_path):
    folder, upstream_recipe, _upstream = trained
    recipe = _downstream(
        folder,
        upstream_recipe,
        name="ev1",
        engine="evaluate",
        metrics="[imagenet_a_top1, mce, jaccard]",
        eval_metrics="[imagenet_a_top1, mce, jaccard]",
        classes=4,
    )
    (run,) = load_recipe(recipe, ["data.synthetic.seed=1", "data.synthetic.val_per_class=2"])[1]
    assert run.config.epochs == 0 and run.config.data.synthetic.seed == 1  # the upstream's classes
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    metrics = result.metrics
    assert set(metrics) == {"imagenet_a_top1", "mean_corruption_error", "jaccard"}  # mce: the report's
    assert result.extra.mce_reference is None and result.extra.jaccard_void == "excluded"
    errors = result.extra.imagenet_c_errors
    assert list(errors) == list(CORRUPTIONS) and all(len(e) == 5 for e in errors.values())
    assert metrics["mean_corruption_error"] == pytest.approx(100 * np.mean(list(errors.values())))
    assert 0 <= metrics["imagenet_a_top1"] <= 100 and 0 < metrics["jaccard"] <= 100
    assert read_result(run.folder) == (result, "")


@pytest.mark.slow
def test_a_requeued_evaluation_keeps_the_corruption_splits_it_measured(trained, tmp_path, monkeypatch):
    folder, upstream_recipe, _ = trained
    recipe = _downstream(
        folder, upstream_recipe, name="ev2", engine="evaluate", metrics="[mce]", eval_metrics="[mce]"
    )
    (run,) = load_recipe(recipe, ["data.synthetic.seed=1", "data.synthetic.val_per_class=1"])[1]
    run.folder.mkdir(parents=True)
    (run.folder / evaluate.PARTIAL).write_text(json.dumps({"imagenet_c": {"fog/3": 0.125}}))
    measured = []
    real = evaluate._correct

    def counting(model, dataset, classes, cfg, precision, world):
        measured.append((dataset.corruption, dataset.severity))
        return real(model, dataset, classes, cfg, precision, world)

    monkeypatch.setattr(evaluate, "_correct", counting)
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    assert (
        result.extra.imagenet_c_errors["fog"][2] == 0.125
        and ("fog", 3) not in measured
        and len(measured) == 74
    )


class _Maps(torch.nn.Module):
    """A model whose similarity maps are given: S for every image of the batch."""

    def __init__(self, S: torch.Tensor) -> None:
        super().__init__()
        self.S = S

    def forward_with_similarity(self, images: torch.Tensor):
        return None, self.S.expand(len(images), *self.S.shape)


def test_attention_jaccard_against_a_hand_computation(monkeypatch):
    # two heads on a 2 x 2 grid of 4-px patches -> 8 x 8 labels: the object is the top-left patch, and
    # the bottom-left patch holds a row of void pixels
    probabilities = torch.tensor([[[0.49, 0.01], [0.49, 0.01]], [[0.25, 0.25], [0.25, 0.25]]])
    labels = np.zeros((8, 8), dtype=np.int64)
    labels[:4, :4] = 3
    labels[4, :4] = 255
    images = [(torch.zeros(3, 8, 8), torch.from_numpy(labels))]
    monkeypatch.setattr(evaluate, "_dataset", lambda cfg, name, transform, **split: images)
    world = type("World", (), {"device": torch.device("cpu"), "size": 1, "rank": 0})()
    # head 0 keeps its two 0.49 patches (top-left, bottom-left): 16 px shared, a union of 32 px, 28 without
    # the void; head 1 (uniform, cumsum > 0.4) keeps the three patches after the top-left: 0 shared
    for exclude_void, expected in ((True, 16 / 28), (False, 16 / 32)):
        cfg = OmegaConf.create(
            {
                "eval": {"input_size": None, "keep_mass": 0.6, "exclude_void": exclude_void, "batch_size": 1},
                "data": {"dataset": "synthetic", "num_workers": 0},
            }
        )
        score, skipped = evaluate.attention_jaccard(cfg, _Maps(torch.log(probabilities)), world)
        assert score == pytest.approx(100 * expected) and skipped == 0
    images.append((torch.zeros(3, 8, 8), torch.zeros(8, 8, dtype=torch.int64)))  # no object: left out
    assert evaluate.attention_jaccard(cfg, _Maps(torch.log(probabilities)), world) == (pytest.approx(50.0), 1)


def _rates(protocol, epochs: int = 4, steps: int = 10) -> list[float]:
    """The learning rate of every step of a run, as the engine sets it."""
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    schedule = LrSchedule(optimizer, protocol, epochs=epochs, steps_per_epoch=steps)
    rates = []
    for epoch in range(epochs):
        for step in range(steps):
            schedule.set(epoch, step)
            rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_per_step_schedule_moves_within_an_epoch_and_per_epoch_does_not():
    protocol = OmegaConf.create(
        {"lr_per_step": True, "min_lr": 1e-5, "warmup_epochs": 1, "warmup_lr": 1e-6, "cooldown_epochs": 0}
    )
    rates = _rates(protocol)
    assert rates[0] == pytest.approx(1e-6) and rates[5] == pytest.approx(1e-6 + (1e-3 - 1e-6) * 5 / 10)
    # then the cosine per iteration, over all 40 (timm without warmup_prefix, as Swin's build_scheduler)
    assert rates[25] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 25 / 40)))
    protocol.lr_per_step = False
    per_epoch = _rates(protocol)
    assert all(len(set(per_epoch[e * 10 : e * 10 + 10])) == 1 for e in range(4))


@pytest.mark.slow
def test_tensorboard_holds_the_curves(trained):
    _, _, upstream = trained
    events = EventAccumulator(str(upstream["sar"].folder))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/ce", "train/se", "train/lr", "val/top1", "val/top5"} <= tags
    assert [e.step for e in events.Scalars("val/top1")] == [6, 12]  # 6 steps an epoch, 2 epochs


def _host_reads(monkeypatch, recipe: Path, overrides: list[str]) -> int:
    """How often a whole training run asks a tensor for a host value (.item, .tolist, bool, float, int),
    loading the data aside (torchvision's crops draw with .item() on the CPU, in the workers on a GPU)."""
    count, loading = [0], [False]
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            count[0] += not loading[0]
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    load = core_data.SeededDataset.__getitem__

    def loaded(self, item):
        loading[0] = True
        try:
            return load(self, item)
        finally:
            loading[0] = False

    monkeypatch.setattr(core_data.SeededDataset, "__getitem__", loaded)
    (run,) = [r for r in load_recipe(recipe, overrides)[1] if r.rows == ["sar"]]
    train_run(OmegaConf.to_container(run.config), run.uid)
    monkeypatch.undo()
    return count[0]


@pytest.mark.slow
def test_training_steps_do_not_wait_for_the_device(tmp_path, monkeypatch):
    # the same epoch with 3x the steps reads the device as often: nothing is read per step
    common = [*TINY_OVERRIDES, "epochs=1", "train.log_every=1000", "train.tensorboard=false"]
    reads = []
    for per_class in (8, 24):
        (tmp_path / str(per_class)).mkdir()
        recipe = write_tiny(tmp_path / str(per_class), tmp_path / str(per_class) / "runs")
        reads.append(
            _host_reads(monkeypatch, recipe, [*common, f"data.synthetic.train_per_class={per_class}"])
        )
    assert reads[0] == reads[1], reads


def test_table4_rows_follow_appendix_d3():
    """The fine-tuned model keeps the pre-training architecture; "SAR fine-tuning" adds lambda L_se and
    keeps the standard block (Appendix D.3); the official command's hyperparameters."""
    _, runs = load_recipe(RECIPES_DIR / "table4.yaml")
    assert len(runs) == 16
    for run in runs:
        c, up = run.config, run.upstream.config
        assert c.engine == "finetune" and up.table == "table2" and c.last_block == up.last_block
        sar_pretrained, sar_finetuned = up.last_block == "sar", c.loss.sar
        assert up.loss.sar == sar_pretrained and up.row == ("vit-s-sar" if sar_pretrained else "vit-s")
        assert ("sar-both" if sar_pretrained and sar_finetuned else "") in c.row
        assert c.loss.weight == (0.01 if sar_finetuned else 0.0)
        p = c.protocol
        assert (c.epochs, p.batch_size, p.lr, p.lr_batch_ref, p.warmup_epochs) == (100, 512, 5e-4, 512, 3)
        assert not p.repeated_aug and p.drop_path == 0.1 and c.data.input_size == 224
    assert {r.config.data.dataset for r in runs} == {"cifar10", "cifar100", "flowers102", "pets"}


def test_engines_evaluate_every_nth_step_and_after_the_last():
    """The rule the supervised, probing and segmentation engines share, and `benchmarks local` counts."""
    assert [d for d in range(1, 8) if evaluates_at(d, 3, 7)] == [3, 6, 7]
    assert [d for d in range(1, 7) if evaluates_at(d, 6, 6)] == [6]  # a local run: its final epoch only
    assert [d for d in range(1, 4) if evaluates_at(d, 1, 3)] == [1, 2, 3]


def test_lambda_schedules_the_paper_and_the_public_code():
    paper = OmegaConf.create({"schedule": "constant", "weight": 0.01, "warmup_epochs": 10})
    assert {loss_weight(paper, e, 300) for e in range(300)} == {0.01}
    code = OmegaConf.create({"schedule": "warmup_cosine", "weight": 0.01, "warmup_epochs": 10})
    weights = [loss_weight(code, e, 300) for e in range(300)]
    # SAR's utils.cosine_scheduler(0.01, 0, 300, warmup_epochs=10): linspace, then cosine over 290 epochs
    cosine = [0.005 * (1 + math.cos(math.pi * i / 290)) for i in range(290)]
    expected = list(np.linspace(0, 0.01, 10)) + cosine
    assert weights == pytest.approx(expected)
    assert weights[0] == 0 and weights[9] == pytest.approx(0.01) and weights[10] == pytest.approx(0.01)
    assert 0 < weights[-1] < 1e-6


@pytest.mark.slow
def test_drloc_trains_its_head_beside_the_model_and_resumes(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=2", "loss.drloc_weight=0.1", "loss.drloc_pairs=8"]
    (run,) = [r for r in load_recipe(recipe, overrides)[1] if r.rows == ["base"]]
    config = OmegaConf.to_container(run.config)
    config["epochs"] = 1
    train_run(config, run.uid)  # one epoch, then resumed to two below
    saved = torch.load(run.folder / CHECKPOINT, weights_only=True)
    assert saved["drloc"] and not any(k.startswith("drloc") for k in saved["model"])  # not the model's
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    records = read_metrics(run.folder)
    assert [r["epoch"] for r in records] == [1, 2] and all(r["train_drloc"] > 0 for r in records)
    assert records[0]["train_loss"] == pytest.approx(
        records[0]["train_ce"] + 0.1 * records[0]["train_drloc"], rel=1e-5
    )
    assert result.metrics["top1"] >= 0
    resumed = torch.load(run.folder / CHECKPOINT, weights_only=True)["drloc"]
    assert any(not torch.equal(resumed[k], saved["drloc"][k]) for k in saved["drloc"])  # it trained on


@pytest.mark.slow
def test_model_ema_and_cooldown_as_timm_train_py(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=3", "protocol.model_ema_decay=0.5", "protocol.reports=best_ema"]
    overrides += ["protocol.cooldown_epochs=1", "protocol.warmup_epochs=0"]
    (run,) = [r for r in load_recipe(recipe, overrides)[1] if r.rows == ["base"]]
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    records = read_metrics(run.folder)
    assert all("val_top1_ema" in r for r in records)
    best = max(records, key=lambda r: r["val_top1_ema"])
    assert result.extra.ema == {
        "top1": records[-1]["val_top1_ema"],
        "best_top1": best["val_top1_ema"],
        "best_epoch": best["epoch"],
    }
    assert result.extra.reported == {"what": "best_ema", "top1": best["val_top1_ema"]}
    # cosine over 3 - 1 epochs, then the cool-down epoch at min_lr
    assert records[-1]["lr"] == pytest.approx(run.config.protocol.min_lr)
    assert records[0]["lr"] > records[1]["lr"] > records[-1]["lr"] or records[1]["lr"] == records[-1]["lr"]
    with pytest.raises(RecipeError, match=r"best_ema needs protocol\.model_ema_decay"):
        load_recipe(recipe, [*TINY_OVERRIDES, "protocol.reports=best_ema"])
