"""Pipelines: a downstream recipe's rows consume another recipe's runs (`from:`). The graph's order and
shared nodes, the upstream's part in the downstream identity, reuse of done and live upstream runs,
the missing-checkpoint error, --force on the recipe's own runs only, the dry run's graph, and a failed
upstream run skipping its dependants. Upstream runs that only need to exist are fake finished folders;
the tests that train a downstream run need the finetune engine."""

import json
import socket
import subprocess
from pathlib import Path

import pytest

from harness import launch as launch_module
from harness import lifecycle
from harness.cli import main
from harness.core.result import Result
from harness.pipeline import DONE, UNNEEDED, graph, plan
from harness.recipe import load_recipe
from harness.results import BEST_CHECKPOINT, CHECKPOINT, write_result
from tests.harness_fixtures import TINY, TINY_KWARGS

DOWNSTREAM = """
defaults:
  - recipe_schema
  - protocol: deit
  - _self_
name: down
title: "Down: fine-tunes the tiny recipe's runs"
reproduces: "nothing: a test pipeline"
engine: finetune
model: sar_vit_tiny_patch16_224
dataset: synthetic
epochs: 1
seeds: [0]
data:
  input_size: 32
  num_workers: 0
  synthetic: {{num_classes: 4, image_size: 32, train_per_class: 24, val_per_class: 6, seed: 1}}
protocol: {{batch_size: 16, warmup_epochs: 0}}
train: {{progress: false}}
resources: {resources}
launcher: {{name: inline}}
runs_root: {runs}
rows:
{rows}
"""
RESOURCES = "{gpus_per_node: 0}"


def write_upstream(
    folder: Path, runs: Path, epochs: int = 1, batch_size: int = 16, resources: str = RESOURCES
) -> Path:
    """The tiny recipe (rows `base` and `sar`), trainable in seconds: the upstream of the pipeline."""
    text = TINY.format(runs=runs, kwargs=TINY_KWARGS).replace("epochs: 3", f"epochs: {epochs}")
    text = text.replace("resources: {gpus_per_node: 0}", f"resources: {resources}")
    path = folder / "tiny.yaml"
    path.write_text(text + f"protocol: {{batch_size: {batch_size}, warmup_epochs: 0}}\n")
    return path


def finetune_row(row_id: str, upstream: str, row: str = "base", checkpoint: str = "final") -> str:
    """A downstream row that fine-tunes `row` of the `upstream` recipe (a path or a name)."""
    last_block = "sar" if row == "sar" else "standard"
    lines = [
        f"  - id: {row_id}",
        f"    label: {row_id}",
        f"    from: {{recipe: {upstream}, row: {row}, checkpoint: {checkpoint}}}",
        f"    model_kwargs: {TINY_KWARGS}",
        f"    last_block: {last_block}",
    ]
    return "\n".join(lines)


def write_downstream(
    folder: Path, runs: Path, rows: list[str], name: str = "down.yaml", resources: str = RESOURCES
) -> Path:
    path = folder / name
    text = DOWNSTREAM.format(runs=runs, rows="\n".join(rows), resources=resources)
    path.write_text(text.replace("name: down", f"name: {Path(name).stem}"))
    return path


def fake_done(folder: Path, checkpoints: tuple[str, ...] = (CHECKPOINT, BEST_CHECKPOINT)) -> None:
    """A finished run folder, as far as `status` and a downstream run's checks can tell."""
    folder.mkdir(parents=True, exist_ok=True)
    write_result(folder, Result(metrics={"top1": 50.0}))
    for name in checkpoints:
        (folder / name).write_bytes(b"not a real checkpoint")


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[Path, Path]:
    """An upstream recipe and a downstream one whose rows fine-tune its `base` run (final and best
    checkpoints) and its `sar` run."""
    runs = tmp_path / "runs"
    upstream = write_upstream(tmp_path, runs)
    rows = [
        finetune_row("ft-final", str(upstream)),
        finetune_row("ft-best", str(upstream), checkpoint="best"),
        finetune_row("ft-sar", str(upstream), row="sar"),
    ]
    return upstream, write_downstream(tmp_path, runs, rows)


@pytest.fixture
def launched(monkeypatch) -> list[tuple[list, dict]]:
    """Replaces `launch`: records the runs and dependencies `run` would start, trains nothing."""
    calls: list[tuple[list, dict]] = []

    def record(runs, log=print, after=None):
        calls.append((runs, after or {}))
        return 0

    monkeypatch.setattr(launch_module, "launch", record)
    return calls


def _by_row(nodes):
    return {f"{n.run.table}/{','.join(n.run.rows)}": n for n in nodes}


def test_the_graph_is_topological_and_upstream_runs_are_shared(pipeline, tmp_path):
    _, down = pipeline
    chained = write_downstream(
        tmp_path, tmp_path / "runs", [finetune_row("ft-ft", str(down), row="ft-final")], name="chain.yaml"
    )
    _, runs = load_recipe(chained)
    nodes = graph(runs)
    names = [f"{n.run.table}/{','.join(n.run.rows)}" for n in nodes]
    assert names == ["tiny/base", "down/ft-final", "chain/ft-ft"]  # upstream before downstream
    assert [n.own for n in nodes] == [False, False, True]
    _, runs = load_recipe(down)
    nodes = graph(runs)
    by_row = _by_row(nodes)
    assert len(nodes) == 5 and set(by_row) == {
        "tiny/base",
        "tiny/sar",
        "down/ft-final",
        "down/ft-best",
        "down/ft-sar",
    }
    for index, node in enumerate(nodes):
        assert node.upstream is None or nodes.index(node.upstream) < index
    base = by_row["tiny/base"]
    assert [d.run.rows for d in base.dependants] == [["ft-final"], ["ft-best"]]  # one node for both rows
    assert by_row["down/ft-final"].upstream is base is by_row["down/ft-best"].upstream


def test_the_upstream_run_is_part_of_the_downstream_identity(pipeline, tmp_path):
    upstream, down = pipeline
    _, runs = load_recipe(down)
    uids = {run.rows[0]: run.uid for run in runs}
    assert uids["ft-final"] != uids["ft-best"]  # the same upstream run, another checkpoint of it
    incidental = ["resources.cpus_per_task=3", "launcher.name=local", "train.progress=true", "label=other"]
    _, same = load_recipe(down, incidental)
    assert {run.rows[0]: run.uid for run in same} == uids
    by_name = write_downstream(tmp_path, tmp_path / "runs", [finetune_row("ft-final", "tiny")], "name.yaml")
    _, (named,) = load_recipe(by_name)  # `from.recipe` by name, beside the downstream recipe
    assert named.uid == uids["ft-final"] and named.upstream.uid == runs[0].upstream.uid
    upstream.write_text(upstream.read_text().replace("epochs: 1", "epochs: 2"))  # the upstream trains longer
    _, changed = load_recipe(down)
    assert all(run.uid != uids[run.rows[0]] for run in changed)
    assert changed[0].upstream.uid != runs[0].upstream.uid


def test_a_done_upstream_run_is_reused_and_a_done_downstream_needs_nothing(pipeline, launched, capsys):
    _, down = pipeline
    _, runs = load_recipe(down)
    for run in runs:
        fake_done(run.upstream.folder)
    assert main(["run", str(down)]) == 0
    ((started, after),) = launched
    assert sorted(run.rows[0] for run in started) == ["ft-best", "ft-final", "ft-sar"] and after == {}
    assert "launching 3 run(s); 2 done or live" in capsys.readouterr().out
    for run in runs:  # the downstream runs done, their upstream runs gone: nothing to train again
        fake_done(run.folder)
        for name in ("result.json", CHECKPOINT, BEST_CHECKPOINT):
            (run.upstream.folder / name).unlink(missing_ok=True)
    nodes = graph(runs)
    plan(nodes, force=False)
    assert {n.run.table: n.action for n in nodes} == {"tiny": UNNEEDED, "down": DONE}
    assert main(["run", str(down)]) == 0 and len(launched) == 1
    assert "already done or live" in capsys.readouterr().out


def test_a_live_upstream_run_is_not_launched_again_and_its_dependants_wait_for_its_job(
    pipeline, launched, monkeypatch, capsys
):
    _, down = pipeline
    _, runs = load_recipe(down, ["launcher=slurm"])
    base = next(run for run in runs if run.rows == ["ft-final"]).upstream
    base.folder.mkdir(parents=True)
    record = {"launcher": "slurm", "job_id": "4242_0", "host": socket.gethostname(), "stderr": "x.err"}
    (base.folder / lifecycle.SUBMITTED).write_text(json.dumps(record))
    monkeypatch.setattr(lifecycle, "_slurm_states", lambda ids: dict.fromkeys(ids, "RUNNING"))
    assert main(["run", str(down), "launcher=slurm", "--force"]) == 0  # --force does not touch it
    ((started, after),) = launched
    assert base.uid not in {run.uid for run in started} and len(started) == 4  # 3 downstream, tiny/sar
    waiting = {run.rows[0] for run in started if run.uid in after}
    assert waiting == {"ft-final", "ft-best"} and set(after.values()) == {("4242_0",)}
    out = capsys.readouterr().out
    assert f"{base.uid} (tiny base) is running as slurm 4242_0: not launched again" in out


def test_a_missing_upstream_checkpoint_stops_everything_before_launch(pipeline, launched, capsys):
    upstream, down = pipeline
    _, runs = load_recipe(down)
    base = next(run for run in runs if run.rows == ["ft-best"]).upstream
    for run in runs:
        fake_done(run.upstream.folder)
    (base.folder / BEST_CHECKPOINT).unlink()
    assert main(["run", str(down)]) == 2
    err = capsys.readouterr().err
    for fragment in (base.uid, "rows base", str(upstream), str(base.folder), BEST_CHECKPOINT, "--force"):
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert "ft-best" in err and launched == []
    assert not any(run.folder.exists() for run in runs)
    assert main(["run", str(down), "--dry-run"]) == 0
    assert f"{base.uid} (tiny base): MISSING {BEST_CHECKPOINT}" in capsys.readouterr().out


def test_force_trains_the_recipes_own_runs_again_never_its_upstream(pipeline, launched):
    _, down = pipeline
    _, runs = load_recipe(down)
    for run in runs:
        fake_done(run.upstream.folder)
        fake_done(run.folder)
    assert main(["run", str(down), "--force"]) == 0
    ((started, _),) = launched
    assert {run.uid for run in started} == {run.uid for run in runs}
    assert all((run.upstream.folder / "result.json").exists() for run in runs)
    assert not any((run.folder / "result.json").exists() for run in runs)
    assert not any((run.folder / BEST_CHECKPOINT).exists() for run in runs)


def test_the_dry_run_shows_the_graph_and_what_each_run_waits_for(pipeline, tmp_path, capsys):
    _, down = pipeline
    _, runs = load_recipe(down)
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", str(down), "launcher=slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert sorted(tmp_path.rglob("*")) == before
    assert out.splitlines()[0].endswith("3 run(s), 2 upstream run(s) they consume")
    lines = {line.split()[0]: line for line in out.splitlines() if line[:12] in {r.uid for r in runs}}
    for run in runs:
        up = run.upstream
        assert f"launch  after {up.uid} (tiny {up.rows[0]})" in lines[run.uid]
        assert "down" in lines[run.uid].split() and "not submitted" in lines[run.uid]
    upstream_lines = [line for line in out.splitlines() if line.split()[1:2] == ["tiny"]]
    assert len(upstream_lines) == 2 and all("launch  -" in line for line in upstream_lines)
    assert out.index(upstream_lines[-1]) < min(out.index(line) for line in lines.values())
    arrays = [line for line in out.splitlines() if line.startswith("Slurm job array of")]
    assert len(arrays) == 3 and arrays[0].startswith("Slurm job array of 2 run(s)")  # tiny's first
    base = runs[0].upstream.uid
    assert f"#SBATCH --dependency=afterok:job-of-{base}" in out and "#SBATCH --kill-on-invalid-dep=yes" in out


def test_a_failed_upstream_run_skips_its_dependants(tmp_path, capsys):
    runs = tmp_path / "runs"
    upstream = write_upstream(tmp_path, runs, batch_size=1000)  # larger than the training set: fails at once
    down = write_downstream(tmp_path, runs, [finetune_row("ft", str(upstream))])
    _, (run,) = load_recipe(down)
    assert main(["run", str(down)]) == 1
    out = capsys.readouterr()
    assert f"{run.upstream.uid} (tiny base) failed" in out.out
    assert f"{run.uid} (down ft) skipped: its upstream {run.upstream.uid} (tiny base) failed" in out.out
    assert "2 run(s) failed" in out.err  # the skipped one counts
    assert lifecycle.run_states([run.upstream.folder])[0].state == "failed" and not run.folder.exists()


def test_a_local_run_waits_for_its_live_upstream_and_is_skipped_if_it_ends_without_a_result(
    pipeline, monkeypatch
):
    _, down = pipeline
    _, runs = load_recipe(down)
    run = next(run for run in runs if run.rows == ["ft-final"])
    sleeper = subprocess.Popen(["sleep", "1"])
    run.upstream.folder.mkdir(parents=True)
    record = {"launcher": "local", "job_id": str(sleeper.pid), "host": socket.gethostname()}
    (run.upstream.folder / lifecycle.SUBMITTED).write_text(json.dumps(record))
    monkeypatch.setattr(launch_module, "WAIT_POLL_S", 0.1)
    lines: list[str] = []
    assert launch_module.launch([run], log=lines.append) == 1
    assert sleeper.poll() is not None  # it waited until the upstream job ended
    assert lines[0].startswith(f"waiting for upstream {run.upstream.uid} (tiny base): running as local")
    skipped = f"{run.uid} (down ft-final) skipped: its upstream {run.upstream.uid} (tiny base) is failed"
    assert lines[1] == skipped


def test_status_shows_each_runs_upstream_state(pipeline, capsys):
    _, down = pipeline
    _, runs = load_recipe(down)
    base = next(run for run in runs if run.rows == ["ft-best"]).upstream
    fake_done(base.folder, checkpoints=(CHECKPOINT,))
    assert main(["status", str(down)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    by_row = {run.rows[0]: lines[run.uid] for run in runs}
    assert by_row["ft-final"].endswith(f"{base.uid} (tiny base): done")
    assert by_row["ft-best"].endswith(f"{base.uid} (tiny base): done (no {BEST_CHECKPOINT})")
    assert by_row["ft-sar"].endswith("(tiny sar): not submitted")


# Needs the engines (supervised and finetune): the upstream and downstream runs really train.


@pytest.mark.slow
def test_run_trains_the_missing_upstream_first_then_the_downstream(tmp_path, capsys):
    runs = tmp_path / "runs"
    upstream = write_upstream(tmp_path, runs)
    down = write_downstream(
        tmp_path,
        runs,
        [finetune_row("ft-final", str(upstream)), finetune_row("ft-best", str(upstream), checkpoint="best")],
    )
    assert main(["run", str(down)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    _, resolved = load_recipe(down)
    base = resolved[0].upstream
    assert "launching 3 run(s) (1 upstream); 0 done or live" in out
    assert out.index(f"{base.uid} (tiny base) done") < out.index("(down ft-final) done")
    nodes = graph(resolved)
    assert [n.state.state for n in nodes] == ["done", "done", "done"]
    for run in resolved:
        config = (run.folder / "config.yaml").read_text()
        assert f"folder: {base.folder}" in config and f"uid: {base.uid}" in config
    assert main(["run", str(down)]) == 0
    assert "already done or live" in capsys.readouterr().out
    assert main(["status", str(down)]) == 0
    assert capsys.readouterr().out.count(f"{base.uid} (tiny base): done") == 2
