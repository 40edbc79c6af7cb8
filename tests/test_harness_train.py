"""Training runs end to end: inline and through submitit's local executor, a two-process DDP run (gloo),
resume after SIGKILL with the same metrics (data-loader workers included), the same metrics for any
`data.num_workers`, and non-finite losses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.config import RECIPES_DIR
from harness.core.data import GlobalOrder
from harness.distributed import World
from harness.recipe import load_recipe
from harness.results import read_metrics, read_result, run_dir, run_status
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

REPO = Path(__file__).resolve().parents[1]


def _harness(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=REPO, env=env, **kwargs)


def _run_to_end(*args: str) -> None:
    proc = _harness(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out


def _only_run(recipe: Path, *overrides: str):
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, *overrides])
    return runs


@pytest.mark.slow
def test_inline_run_writes_the_whole_run_folder(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _run_to_end("run", str(recipe), *TINY_OVERRIDES)
    for run in _only_run(recipe):
        folder = run_dir(run.config, run.uid)
        assert {p.name for p in folder.iterdir()} >= {
            "config.yaml",
            "metrics.jsonl",
            "checkpoint.pt",
            "result.json",
        }
        records = read_metrics(folder)
        assert [r["epoch"] for r in records] == [1, 2, 3]
        for key in (
            "train_loss",
            "train_ce",
            "train_se",
            "lr",
            "val_top1",
            "val_top5",
            "images_per_s",
            "seconds",
        ):
            assert all(key in r for r in records), key
        result, _ = read_result(folder)
        assert result.metrics["top1"] == records[-1]["val_top1"]
        assert result.best.metrics["top1"] == max(r["val_top1"] for r in records)
        assert (folder / "checkpoint-best.pt").exists() and list(folder.glob("events.out.tfevents.*"))
        assert result.provenance["git_commit"] and result.provenance["world_size"] == 1
        assert run_status(folder).state == "done"
    proc = _harness("run", str(recipe), *TINY_OVERRIDES, stdout=subprocess.PIPE, text=True)
    assert "already done" in proc.communicate(timeout=120)[0]


def _metrics(recipe: Path, *overrides: str) -> list[dict]:
    run = _only_run(recipe, *overrides)[0]
    return read_metrics(run_dir(run.config, run.uid))


def _same_training(got: list[dict], expected: list[dict]) -> None:
    assert [r["epoch"] for r in got] == [r["epoch"] for r in expected]
    for key in ("train_loss", "train_ce", "train_se", "val_top1", "val_top5", "lr"):
        assert [r[key] for r in got] == [r[key] for r in expected], key


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_to_the_same_metrics(tmp_path):
    # with persistent data-loader workers, whose own RNG seeds a resumed process draws afresh
    overrides = [*TINY_OVERRIDES, "epochs=4", "data.synthetic.train_per_class=64", "data.num_workers=2"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    reference = write_tiny(tmp_path / "a", tmp_path / "a" / "runs")
    killed = write_tiny(tmp_path / "b", tmp_path / "b" / "runs")
    _run_to_end("run", str(reference), *overrides, "seeds=[3]")
    run = _only_run(killed, "epochs=4", "data.synthetic.train_per_class=64", "seeds=[3]")[0]
    folder = run_dir(run.config, run.uid)
    proc = _harness(
        "run", str(killed), *overrides, "seeds=[3]", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while len(read_metrics(folder)) < 2 and time.time() < deadline:  # kill it inside its third epoch
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 2 <= len(read_metrics(folder)) < 4 and not (folder / "result.json").exists()
    _run_to_end("run", str(killed), *overrides, "seeds=[3]")
    expected = _metrics(reference, "epochs=4", "data.synthetic.train_per_class=64", "seeds=[3]")
    got = read_metrics(folder)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    _same_training(got, expected)


@pytest.mark.slow
def test_metrics_do_not_depend_on_num_workers(tmp_path):
    metrics = {}
    for workers in (0, 2):
        (tmp_path / str(workers)).mkdir()
        recipe = write_tiny(tmp_path / str(workers), tmp_path / str(workers) / "runs")
        overrides = ["epochs=2", f"data.num_workers={workers}"]
        _run_to_end("run", str(recipe), *TINY_OVERRIDES, *overrides)
        metrics[workers] = _metrics(recipe, *overrides)
    assert [r["epoch"] for r in metrics[0]] == [1, 2]
    _same_training(metrics[2], metrics[0])


def test_repeated_augmentation_order_follows_the_run_seed():
    orders = {}
    for seed in (0, 1):
        sampler = GlobalOrder(48, seed, seed, World(), None, repeats=3, selected=48)
        sampler.set_epoch(0)
        orders[seed] = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == orders[1] != orders[0]


@pytest.mark.slow
def test_local_launcher_two_process_ddp(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [
        *TINY_OVERRIDES,
        "launcher=local",
        f"launcher.folder={tmp_path / 'submitit'}",
        "resources.tasks_per_node=2",
        "epochs=2",
    ]
    _run_to_end("run", str(recipe), *overrides)
    for run in _only_run(recipe, "launcher=local", "resources.tasks_per_node=2", "epochs=2"):
        folder = run_dir(run.config, run.uid)
        assert read_result(folder)[0].provenance["world_size"] == 2
        assert [r["epoch"] for r in read_metrics(folder)] == [1, 2]


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_as_failed(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [
        *TINY_OVERRIDES,
        "protocol.lr=1e30",
        "protocol.warmup_epochs=0",
        "train.max_nonfinite_steps=2",
    ]
    proc = _harness(
        "run", str(recipe), *overrides, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    proc.communicate(timeout=600)
    assert proc.returncode != 0
    run = _only_run(recipe, "protocol.lr=1e30", "protocol.warmup_epochs=0", "train.max_nonfinite_steps=2")[0]
    status = run_status(run_dir(run.config, run.uid))
    assert status.state == "failed" and "non-finite" in status.detail


@pytest.mark.slow
def test_table1_local_dry_run_lists_twelve_runs_per_seed():
    proc = _harness(
        "run", str(RECIPES_DIR / "table1.yaml"), "scale=local", "--dry-run", stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.count("synthetic (for imagenet100)") == 12 * 3  # local.seeds
