"""A diverged run never reads "done": an infinite learning rate is refused, the non-finite streak spans
epochs (and resumes) in every engine, and a run whose metrics are not finite or that skipped a large share
of its steps fails, saying so in `status` and in the report."""

import json
import math
import os

import pytest
import torch
from omegaconf import OmegaConf

from harness import distributed
from harness.cli import main
from harness.config import RecipeError
from harness.core.job import RunFailed, run_job
from harness.core.result import Outcome
from harness.core.steps import StepTotals
from harness.recipe import load_recipe
from harness.results import run_dir, run_status
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny
from tests.test_ssl_engines import _recipes

DIVERGING = ["protocol.lr=1e38", "protocol.warmup_epochs=0", "epochs=4"]  # NaN from the second step on


@pytest.mark.parametrize(
    "override", ["protocol.lr=inf", "protocol.lr=-inf", "loss.weight=inf", "protocol.weight_decay=inf"]
)
def test_an_infinite_value_is_refused_by_key(tmp_path, override):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    with pytest.raises(RecipeError, match=rf"override '{override}'.*key '{override.split('=')[0]}'"):
        load_recipe(recipe, [*TINY_OVERRIDES, override])


def _failed(folder, capsys) -> str:
    (state,) = [run_status(folder)]
    assert state.state == "failed" and not (folder / "result.json").exists(), state
    capsys.readouterr()
    return state.detail


@pytest.mark.slow
def test_a_streak_shorter_than_an_epoch_fails_the_run_across_epochs(tmp_path, capsys):
    """3 steps per epoch, at most 5 non-finite in a row: only a streak that spans epochs can fail it."""
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, *DIVERGING, "protocol.batch_size=32", "train.max_nonfinite_steps=5"]
    assert main(["run", str(recipe), *overrides, "launcher=inline"]) == 1
    for run in load_recipe(recipe, overrides)[1]:
        assert "the loss was non-finite for 5 steps in a row (epoch 2, step 3)" in _failed(run.folder, capsys)


@pytest.mark.slow
@pytest.mark.parametrize("row", ["dino", "moco"])
def test_the_streak_spans_epochs_in_the_pretraining_engines(tmp_path, row, capsys):
    """The tiny pre-training runs have 3 steps per epoch."""
    up, _ = _recipes(tmp_path)
    overrides = [*DIVERGING, "train.max_nonfinite_steps=4"]
    assert main(["run", str(up), *overrides]) == 1
    (run,) = [run for run in load_recipe(up, overrides)[1] if run.rows == [row]]
    assert "the loss was non-finite for 4 steps in a row" in _failed(run.folder, capsys)


@pytest.mark.slow
def test_the_streak_spans_epochs_in_the_linear_probe(tmp_path, capsys):
    _, down = _recipes(tmp_path)
    overrides = ["protocol.lr=1e38", "train.max_nonfinite_steps=4", "epochs=4"]
    assert main(["run", str(down), *overrides]) == 1
    (probe,) = [run for run in load_recipe(down, overrides)[1] if run.rows == ["probe"]]
    assert run_status(probe.upstream.folder).state == "done"  # its pre-training trained as asked
    assert "the loss was non-finite for 4 steps in a row" in _failed(probe.folder, capsys)


def test_the_streak_resumes_with_the_run():
    """A job killed in a streak resumes it: the counts live in the run's checkpointed state."""
    world = distributed.World()
    bad, good, loss = torch.tensor(1.0), torch.tensor(0.0), torch.tensor(math.nan)
    state: dict = {}
    totals = StepTotals(world.device, 4, state, ("loss",))
    for skipped in (good, bad, bad, bad):
        totals.add(loss, skipped)
    totals.read(world, "epoch 1")
    assert state == {"nonfinite_streak": 3, "steps": 4, "skipped_steps": 3}
    resumed = StepTotals(world.device, 4, json.loads(json.dumps(state)), ("loss",))  # through a checkpoint
    resumed.add(loss, bad)
    with pytest.raises(RunFailed, match="non-finite for 4 steps in a row"):
        resumed.read(world, "epoch 2")


def _tiny_config(tmp_path) -> tuple[dict, str]:
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    run = load_recipe(recipe, TINY_OVERRIDES)[1][0]
    return OmegaConf.to_container(run.config), run.uid


@pytest.mark.parametrize(
    ("metrics", "counts", "said"),
    [
        ({"top1": math.nan}, {"steps": 40, "skipped_steps": 0}, "diverged: top1 is nan"),
        ({"top1": 10.0}, {"steps": 40, "skipped_steps": 5}, "diverged: 5 of 40 optimizer steps skipped"),
    ],
)
def test_a_run_that_ends_diverged_fails_instead_of_done(tmp_path, metrics, counts, said):
    config, uid = _tiny_config(tmp_path)  # train.max_skipped_fraction: 0.1 by default

    def engine(cfg, uid, world, folder):
        return Outcome(metrics=metrics, **counts)

    with pytest.raises(RunFailed, match=said):
        run_job(engine, config, uid)
    folder = run_dir(OmegaConf.create(config), uid)
    assert not (folder / "result.json").exists()
    assert run_status(folder).detail.startswith(said)


def test_a_result_with_a_nan_metric_is_not_done_in_status_and_report(tmp_path, capsys):
    """As an older harness wrote it: result.json with NaN top-1."""
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    runs = load_recipe(recipe, TINY_OVERRIDES)[1]
    for run in runs:
        run.folder.mkdir(parents=True)
        (run.folder / "result.json").write_text(json.dumps({"metrics": {"top1": math.nan}}))
    assert main(["status", str(recipe), *TINY_OVERRIDES]) == 0
    assert capsys.readouterr().out.count("failed: diverged: result.json says top1 is nan") == 2
    assert main(["report", str(recipe), *TINY_OVERRIDES, "--out", str(tmp_path / "reports")]) == 0
    report = (tmp_path / "reports" / "tiny.md").read_text()
    assert "| ViT-T | failed: diverged: result.json says top1 is nan | 50.0 | - |" in report


def test_a_failure_file_that_cannot_be_written_does_not_hide_the_failure(tmp_path, capsys):
    config, uid = _tiny_config(tmp_path)
    folder = run_dir(OmegaConf.create(config), uid)
    # in the way of the failure file's atomic write, as a read-only folder is (root writes in those)
    (folder / f".failure.json.{os.getpid()}.tmp").mkdir(parents=True)

    def engine(cfg, uid, world, folder):
        raise RunFailed("the real reason")

    with pytest.raises(RunFailed, match="the real reason"):
        run_job(engine, config, uid)
    assert "could not be written" in capsys.readouterr().err
