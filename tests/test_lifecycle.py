"""What each run is doing: submitted.json and the scheduler's word, failures of each rank, never two
trainers on one run, and no local job left training when `harness run` is terminated."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.lifecycle import _state, process_alive, run_states
from harness.recipe import load_recipe
from harness.records import read_object
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

REPO = Path(__file__).resolve().parents[1]


def _submit(folder: Path, launcher: str, job_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"launcher": launcher, "job_id": job_id, "host": socket.gethostname(), "stderr": "/logs/x.err"}
    (folder / "submitted.json").write_text(json.dumps(record))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_local_jobs_are_running_while_their_process_lives(tmp_path):
    _submit(tmp_path / "alive", "local", str(os.getpid()))
    _submit(tmp_path / "dead", "local", str(_dead_pid()))
    alive, dead, never = run_states([tmp_path / "alive", tmp_path / "dead", tmp_path / "never"])
    assert alive.state == "running" and alive.live and alive.logs == "/logs/x.err"
    assert dead.state == "failed" and "without a result" in dead.detail and not dead.live
    assert never.state == "not submitted"


@pytest.mark.parametrize(
    ("slurm_state", "checkpoint", "expected"),
    [
        ("PENDING", False, "pending"),
        ("PENDING", True, "requeued"),
        ("REQUEUED", True, "requeued"),
        ("RUNNING", False, "running"),
        ("OUT_OF_MEMORY", False, "failed"),
        ("NODE_FAIL", True, "failed"),
        ("TIMEOUT", True, "failed"),
        ("CANCELLED", False, "failed"),
        ("COMPLETED", False, "failed"),  # the job ended, yet the run has no result
    ],
)
def test_slurm_states_map_to_run_states_with_slurms_reason(tmp_path, slurm_state, checkpoint, expected):
    _submit(tmp_path, "slurm", "77_3")
    if checkpoint:
        (tmp_path / "checkpoint.pt").write_bytes(b"")
    state = _state(tmp_path, json.loads((tmp_path / "submitted.json").read_text()), {"77_3": slurm_state})
    assert state.state == expected and state.job == "slurm 77_3"
    if expected in ("failed", "pending", "requeued"):
        assert slurm_state in state.detail


def test_the_first_rank_to_fail_is_the_reason(tmp_path):
    (tmp_path / "failure.json").write_text(json.dumps({"rank": 0, "time": 20.0, "reason": "NCCL timeout"}))
    (tmp_path / "failure-rank3.json").write_text(
        json.dumps({"rank": 3, "time": 10.0, "reason": "OOM in step"})
    )
    (state,) = run_states([tmp_path])
    assert (state.state, state.detail) == ("failed", "rank 3: OOM in step")


@pytest.fixture
def saturated_cores():
    """Every core busy with another process for the length of a test, as on a loaded machine."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    yield
    for process in busy:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_live_runs_are_not_launched_again_and_force_needs_cancel(
    tmp_path, capsys, monkeypatch, saturated_cores
):
    import harness.processes

    monkeypatch.setattr(harness.processes, "GRACE_S", 2.0)
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, runs = load_recipe(recipe, TINY_OVERRIDES)
    # jobs that ignore SIGINT, as everything started from a script's `&` does: cancel must stop them too
    sleepers = [subprocess.Popen(["bash", "-c", "trap '' INT; exec sleep 300"]) for _ in runs]
    for run, sleeper in zip(runs, sleepers, strict=True):
        _submit(run.folder, "local", str(sleeper.pid))
    argv = ["run", str(recipe), *TINY_OVERRIDES, "launcher=inline"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("not launched again") == 2 and "already done or live" in out
    assert main([*argv, "--force"]) == 2
    assert "add --cancel" in capsys.readouterr().err
    assert all(s.poll() is None for s in sleepers)  # nothing was stopped, nothing deleted
    assert all((run.folder / "submitted.json").exists() for run in runs)
    assert main([*argv, "--force", "--cancel"]) == 0
    assert capsys.readouterr().out.count("cancelled local") == 2
    for sleeper in sleepers:
        assert sleeper.poll() == -signal.SIGKILL  # stopped before `run` went on
    assert [s.state for s in run_states([run.folder for run in runs])] == ["done", "done"]


def _wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.slow
def test_terminating_harness_run_stops_its_local_job(tmp_path, saturated_cores):
    """Started with `&` from a script and under nohup, `harness run` and the job it starts inherit SIGINT
    (and SIGHUP) ignored; SIGTERM still stops the command, its job and the job's trainer."""
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, "epochs=200", "launcher=local"]
    _, runs = load_recipe(recipe, overrides)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = shlex.join([sys.executable, "-m", "harness", "run", str(recipe), *overrides])
    log = tmp_path / "harness.log"
    started = subprocess.run(
        ["bash", "-c", f"nohup {command} > {shlex.quote(str(log))} 2>&1 & echo $!"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    harness = int(started.stdout)
    folder = runs[0].folder
    _wait_for(lambda: (folder / "submitted.json").exists(), 180, f"never submitted: {log.read_text()}")
    controller = int(json.loads((folder / "submitted.json").read_text())["job_id"])
    _wait_for(lambda: "pid" in (read_object(folder / "heartbeat")[0] or {}), 180, "the job never started")
    trainer = read_object(folder / "heartbeat")[0]["pid"]
    assert trainer != controller and process_alive(trainer)
    os.kill(harness, signal.SIGTERM)
    for pid, what in (
        (harness, "harness run"),
        (controller, "the job's controller"),
        (trainer, "its trainer"),
    ):
        _wait_for(lambda pid=pid: not process_alive(pid), 60, f"{what} lives on after SIGTERM")
    said = log.read_text()
    assert "interrupted (SIGTERM): resume with the same command (python -m harness run" in said, said
    assert "Traceback" not in said, said
    (state,) = run_states([folder])
    assert state.state == "failed" and not state.live
    assert not list(Path(runs[0].config.launcher.folder).rglob("%j"))  # no folder named after a placeholder


@pytest.mark.slow
def test_a_second_trainer_does_not_start_and_a_stale_lock_is_taken_over(tmp_path):
    from omegaconf import OmegaConf

    from harness.engines import train_run
    from harness.lifecycle import LOCK, RunLocked, trainer_lock

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, "epochs=1"])
    run = runs[0]
    config = OmegaConf.to_container(run.config)
    with trainer_lock(run.folder, "4242", "local"):  # a live trainer: this process
        before = sorted(p.name for p in run.folder.iterdir())
        with pytest.raises(RunLocked, match="4242"):
            train_run(config, run.uid)
        assert sorted(p.name for p in run.folder.iterdir()) == before == [LOCK]
    assert not (run.folder / LOCK).exists()  # released
    stale = {"job_id": "999", "launcher": "local", "host": socket.gethostname(), "pid": _dead_pid()}
    (run.folder / LOCK).write_text(json.dumps(stale))
    assert train_run(config, run.uid).metrics["top1"] >= 0  # the dead holder's lock is taken over
    assert not (run.folder / LOCK).exists()


def test_an_inline_run_lives_while_its_trainer_holds_the_lock(tmp_path):
    from harness.lifecycle import LOCK

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "heartbeat").write_text("{}")  # fresh, yet its trainer was killed
    holder = {"job_id": "inline", "launcher": "inline", "host": socket.gethostname(), "pid": os.getpid()}
    (folder / LOCK).write_text(json.dumps(holder))
    assert run_states([folder])[0].state == "running"
    (folder / LOCK).write_text(json.dumps({**holder, "pid": _dead_pid()}))
    (folder / "checkpoint.pt").write_bytes(b"")
    (state,) = run_states([folder])
    assert state.state == "interrupted" and not state.live


@pytest.mark.slow
def test_provenance_at_every_start_and_a_resume_on_other_code_refused(tmp_path, capsys):
    from harness.provenance import LOG

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    argv = ["run", str(recipe), *TINY_OVERRIDES, "epochs=2", "seeds=[5]", "launcher=inline"]
    assert main(argv) == 0
    run = load_recipe(recipe, [*TINY_OVERRIDES, "epochs=2", "seeds=[5]"])[1][0]
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    (start,) = [json.loads(line) for line in (run.folder / LOG).read_text().splitlines()]
    assert start["event"] == "start" and start["git_commit"] == head and start["packages"]["torch"]
    (run.folder / "result.json").unlink()  # as if killed after its last checkpoint
    assert main(argv) == 0
    events = [json.loads(line) for line in (run.folder / LOG).read_text().splitlines()]
    assert [(e["event"], e["epoch"]) for e in events] == [("start", 0), ("resume", 2)]
    (run.folder / LOG).write_text(json.dumps({**start, "git_commit": "f" * 40}) + "\n")
    (run.folder / "result.json").unlink()
    assert main(argv) == 1
    (state,) = run_states([run.folder])
    assert state.state == "failed" and "started on commit ffffffffffff" in state.detail
    assert "--allow-code-change" in state.detail
    assert main([*argv, "--allow-code-change"]) == 0
    assert run_states([run.folder])[0].state == "done"
    capsys.readouterr()


def test_without_a_scheduler_to_ask_slurm_jobs_stay_unknown(tmp_path, monkeypatch):
    import harness.lifecycle

    monkeypatch.setattr(harness.lifecycle.shutil, "which", lambda name: None)
    _submit(tmp_path, "slurm", "123")
    (state,) = run_states([tmp_path])
    assert (state.state, state.detail) == ("pending", "Slurm: UNKNOWN")
