"""On a real Slurm cluster: submitit job arrays, the harness's `launcher=slurm` path, requeue of a
Checkpointable job. The cluster is brought up beforehand by `bash tests/slurm/cluster.sh up` (CI does
it); without one these tests skip, or fail if REQUIRE_SLURM=1."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

from tests.harness_fixtures import TINY_OVERRIDES, require_cluster, write_tiny

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # real jobs: minutes, not seconds

REPO = Path(__file__).resolve().parents[1]
UP = "bash tests/slurm/cluster.sh up"


def _cluster_problem() -> str | None:
    """Why there is no usable cluster, or None if there is one: accounting answers and a node is up."""
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return f"no Slurm here (sinfo/sacct not on the PATH); bring a test cluster up with `{UP}`"
    outputs = []
    for command in (["sacct", "-n", "-X", "-S", "now"], ["sinfo", "-h", "-o", "%t"]):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return f"`{command[0]}` did not answer in 30 s; bring the test cluster up with `{UP}`"
        if proc.returncode != 0:
            why = (proc.stderr.strip() or f"exit status {proc.returncode}").splitlines()[-1]
            return f"the Slurm cluster does not answer ({why}); bring it up with `{UP}`"
        outputs.append(proc.stdout)
    states = outputs[1].split()
    if not any(s.rstrip("*~#$@^-+").startswith(("idle", "mix", "alloc")) for s in states):
        return f"no Slurm node is up (sinfo states: {states or 'none'}); bring it up with `{UP}`"
    return None


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    require_cluster(_cluster_problem())


def _executor(folder: Path, **parameters) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1, **parameters)
    return executor


def _final_state(job: submitit.Job, timeout_s: float = 30) -> str:
    """The job's state in accounting once it has left RUNNING/COMPLETING (sacct lags the result file)."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = job.get_info(mode="force").get("State", "UNKNOWN")
        if state not in ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "UNKNOWN"):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(1)


def _square(x: int) -> int:
    return x * x


def test_submitit_map_array_completes(tmp_path):
    jobs = _executor(tmp_path / "submitit").map_array(_square, [1, 2, 3])
    assert [job.result() for job in jobs] == [1, 4, 9]
    assert [_final_state(job) for job in jobs] == ["COMPLETED"] * 3
    assert all(job.state == "COMPLETED" for job in jobs)  # what submitit itself reports, from sacct


def test_harness_run_on_slurm(tmp_path):
    from harness.results import read_result

    runs = tmp_path / "runs"
    recipe = write_tiny(tmp_path, runs)
    overrides = [
        *TINY_OVERRIDES,
        "launcher=slurm",
        f"launcher.folder={tmp_path / 'submitit'}",
        "resources.cpus_per_task=1",
        "resources.mem_gb=2",  # a tiny run peaks at ~0.9 GB (torch); the limit is enforced (OverMemoryKill)
        "resources.timeout_min=10",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(recipe), *overrides],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("submitted to Slurm as job") == 2, proc.stdout
    deadline = time.monotonic() + 120
    while len(results := sorted(runs.glob("tiny/*/result.json"))) < 2:
        failures = sorted(runs.glob("tiny/*/failure.json"))
        assert not failures, failures[0].read_text()
        if time.monotonic() > deadline:
            logs = "\n".join(f"{p}:\n{p.read_text()[-2000:]}" for p in (tmp_path / "submitit").rglob("*.err"))
            pytest.fail(f"{len(results)}/2 result.json after 120 s; submitit logs:\n{logs}")
        time.sleep(2)
    for path in results:
        top1 = read_result(path.parent)[0].metrics["top1"]
        assert isinstance(top1, float | int) and 0 <= top1 <= 100, top1


class CountedSleep(submitit.helpers.Checkpointable):
    """Appends a line to `starts` each time it starts; the first start sleeps until it is requeued."""

    def __call__(self, starts: str, sleep_s: int) -> int:
        with open(starts, "a") as f:
            f.write(f"{os.environ.get('SLURM_JOB_ID')} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        count = len(Path(starts).read_text().splitlines())
        if count == 1:
            for _ in range(sleep_s):
                time.sleep(1)
        return count


def test_checkpointable_job_requeued_by_usr2_finishes(tmp_path):
    starts = tmp_path / "starts.txt"
    job = _executor(tmp_path / "submitit").submit(CountedSleep(), str(starts), 300)
    deadline = time.monotonic() + 60
    while not (starts.exists() and starts.read_text()):
        assert time.monotonic() < deadline, f"the job did not start in 60 s: {job.get_info()}"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)  # as a preemption would
    deadline = time.monotonic() + 150  # requeued, pending for AuthInfo=cred_expire, started again
    while not job.done():
        assert time.monotonic() < deadline, f"not finished 150 s after USR2: {job.get_info()}"
        time.sleep(1)
    assert job.result() == 2, starts.read_text()
    restarts = [line.split()[1] for line in starts.read_text().splitlines()]
    assert restarts == ["0", "1"]
    assert _final_state(job) == "COMPLETED"


SLURM_OVERRIDES = [
    "launcher=slurm",
    "resources.cpus_per_task=1",
    "resources.mem_gb=2",
    "resources.timeout_min=10",
]


def _harness(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s} s"
        time.sleep(1)


def _states(recipe: Path, overrides: list[str]) -> dict[str, str]:
    from harness.lifecycle import run_states
    from harness.recipe import load_recipe

    _, runs = load_recipe(recipe, overrides)
    return {run.rows[0]: state for run, state in zip(runs, run_states([r.folder for r in runs]), strict=True)}


def _why_not_cancelled(job: str, log: str) -> str:
    """What Slurm and the job's log say, for a job that ended otherwise than cancelled."""
    sacct = subprocess.run(
        ["sacct", "-j", job, "-o", "JobID,State,ExitCode,Reason,Start,End", "-P"],
        capture_output=True,
        text=True,
    ).stdout
    tail = Path(log).read_text(errors="replace")[-3000:] if Path(log).is_file() else "(no log)"
    return f"sacct:\n{sacct}\nlog tail:\n{tail}"


def test_live_jobs_are_not_launched_twice_and_scancel_shows_as_cancelled(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, *SLURM_OVERRIDES, "epochs=100"]
    first = _harness("run", str(recipe), *overrides)
    assert first.returncode == 0 and first.stdout.count("submitted to Slurm") == 2, (
        first.stdout + first.stderr
    )
    again = _harness("run", str(recipe), *overrides)  # at once: both jobs pending or running
    assert again.returncode == 0 and "submitted to Slurm" not in again.stdout, again.stdout
    assert again.stdout.count("not launched again") == 2
    forced = _harness("run", str(recipe), *overrides, "--force")
    assert forced.returncode == 2 and "--cancel" in forced.stderr
    job = _states(recipe, overrides)["base"].job.split()[1]
    subprocess.run(["scancel", job], check=True)
    _wait_until(lambda: _states(recipe, overrides)["base"].state == "failed", 60, "failed after scancel")
    state = _states(recipe, overrides)["base"]
    assert "CANCELLED" in state.detail and state.logs.endswith(".err"), _why_not_cancelled(job, state.logs)
    status = _harness("status", str(recipe), *overrides)
    assert "failed: Slurm: CANCELLED" in status.stdout and f"logs in {state.logs}" in status.stdout
    cancelled = _harness("run", str(recipe), *overrides, "--force", "--cancel")  # stops the other job too
    assert cancelled.returncode == 0 and "cancelled slurm" in cancelled.stdout, cancelled.stdout
    subprocess.run(["scancel", "--name=sar-tiny"], check=True)


def test_afterok_runs_in_order_and_cancels_the_dependant_of_a_failure(tmp_path):
    from harness.launch import launch
    from harness.lifecycle import read_submission, run_states
    from harness.recipe import load_recipe

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, (base, _) = load_recipe(recipe, [*TINY_OVERRIDES, *SLURM_OVERRIDES])
    _, (broken, _) = load_recipe(
        recipe, [*TINY_OVERRIDES, *SLURM_OVERRIDES, "data.dataset=imagenet1k", "data.root=/nonexistent"]
    )
    launch([base, broken], log=lambda line: None)
    upstream = {run.uid: read_submission(run.folder)["job_id"] for run in (base, broken)}
    _, (ok_after, _) = load_recipe(recipe, [*TINY_OVERRIDES, *SLURM_OVERRIDES, "epochs=2"])
    _, (_, never) = load_recipe(recipe, [*TINY_OVERRIDES, *SLURM_OVERRIDES, "epochs=2"])
    launch([ok_after], log=lambda line: None, after={ok_after.uid: (upstream[base.uid],)})
    launch([never], log=lambda line: None, after={never.uid: (upstream[broken.uid],)})
    folders = [base.folder, broken.folder, ok_after.folder, never.folder]
    _wait_until(lambda: all(not s.live for s in run_states(folders)), 150, "all ended")
    states = run_states(folders)
    assert [s.state for s in states] == ["done", "failed", "done", "failed"], states
    assert "CANCELLED" in states[3].detail or "DependencyNeverSatisfied" in states[3].detail
    assert (ok_after.folder / "config.yaml").stat().st_mtime >= (base.folder / "result.json").stat().st_mtime


def test_usr2_mid_run_requeues_and_ends_with_the_same_metrics(tmp_path):
    from harness.lifecycle import run_states
    from harness.recipe import load_recipe
    from harness.results import read_metrics

    recipe = write_tiny(tmp_path, tmp_path / "slurm-runs")
    overrides = [*TINY_OVERRIDES, "epochs=6", "seeds=[0]"]
    _, (run, _) = load_recipe(recipe, overrides)
    assert _harness("run", str(recipe), *overrides, *SLURM_OVERRIDES).returncode == 0
    _wait_until(lambda: len(read_metrics(run.folder)) >= 2, 120, "2 epochs in")
    job = run_states([run.folder])[0].job.split()[1]
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # as a preemption would
    _wait_until(lambda: (run.folder / "result.json").exists(), 150, "done after the requeue")

    def requeues() -> int:
        states = ["sacct", "-n", "-X", "-D", "-j", job, "-o", "State"]
        return subprocess.run(states, capture_output=True, text=True).stdout.split().count("REQUEUED")

    # slurmdbd records the requeue a little after the job moves on: wait for the accounting, then check
    _wait_until(lambda: requeues() >= 1, 60, "the requeue in sacct")
    assert requeues() >= 1
    reference = tmp_path / "inline-runs"
    assert (
        _harness("run", str(recipe), *overrides, "launcher=inline", f"runs_root={reference}").returncode == 0
    )
    _, (straight, _) = load_recipe(recipe, [*overrides, f"runs_root={reference}"])
    resumed, uninterrupted = read_metrics(run.folder), read_metrics(straight.folder)
    assert uninterrupted and straight.uid == run.uid
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4, 5, 6]
    keys = ("train_loss", "val_top1", "val_top5")
    assert [[m[k] for k in keys] for m in resumed] == [[m[k] for k in keys] for m in uninterrupted]


def test_a_snapshot_job_runs_the_code_it_was_submitted_with(tmp_path):
    from harness.provenance import LOG

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    overrides = [*TINY_OVERRIDES, *SLURM_OVERRIDES, "epochs=1", "launcher.snapshot=true"]
    assert _harness("run", str(recipe), *overrides).returncode == 0
    _wait_until(lambda: all(s.state == "done" for s in _states(recipe, overrides).values()), 120, "done")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    for folder in (tmp_path / "runs" / "tiny").iterdir():
        (start,) = [json.loads(line) for line in (folder / LOG).read_text().splitlines()]
        assert (
            Path(start["code_dir"]).parent == tmp_path / "runs" / "_snapshots" and start["git_commit"] == head
        )


SMALL_JOB = "{gpus_per_node: 0, cpus_per_task: 1, mem_gb: 2, timeout_min: 10}"


def _pipeline(tmp_path: Path, batch_size: int = 16) -> tuple[Path, list[str]]:
    """A downstream recipe fine-tuning the tiny recipe's `base` run, both as small Slurm jobs."""
    from tests.test_pipeline import finetune_row, write_downstream, write_upstream

    runs = tmp_path / "runs"
    upstream = write_upstream(tmp_path, runs, batch_size=batch_size, resources=SMALL_JOB)
    down = write_downstream(tmp_path, runs, [finetune_row("ft", str(upstream))], resources=SMALL_JOB)
    return down, ["launcher=slurm", f"launcher.folder={tmp_path / 'submitit'}"]


def _sacct(job: str, fields: str) -> list[str]:
    proc = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job, "-o", fields], capture_output=True, text=True, check=True
    )
    return proc.stdout.strip().splitlines()[0].split("|")


def test_a_pipeline_is_one_submission_whose_downstream_job_waits_with_afterok(tmp_path):
    from harness.lifecycle import read_submission, run_states
    from harness.recipe import load_recipe

    down, overrides = _pipeline(tmp_path)
    proc = _harness("run", str(down), *overrides)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, (run,) = load_recipe(down, overrides)
    upstream_job = read_submission(run.upstream.folder)["job_id"]
    downstream_job = read_submission(run.folder)["job_id"]
    assert f"submitted to Slurm as job {downstream_job}, after job {upstream_job}" in proc.stdout
    shown = subprocess.run(["scontrol", "show", "job", downstream_job], capture_output=True, text=True).stdout
    assert f"Dependency=afterok:{upstream_job}" in shown, shown  # asked at once: the upstream still runs
    folders = [run.upstream.folder, run.folder]
    _wait_until(lambda: all(not s.live for s in run_states(folders)), 240, "both ended")
    assert [s.state for s in run_states(folders)] == ["done", "done"], run_states(folders)
    upstream_end = _sacct(upstream_job, "End")[0]
    downstream_start = _sacct(downstream_job, "Start")[0]
    assert downstream_start >= upstream_end, (upstream_end, downstream_start)  # ISO times sort as text


def test_the_downstream_job_of_a_failed_upstream_job_is_cancelled(tmp_path):
    from harness.lifecycle import read_submission, run_states
    from harness.recipe import load_recipe

    down, overrides = _pipeline(tmp_path, batch_size=1000)  # larger than the training set: fails at once
    proc = _harness("run", str(down), *overrides)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _, (run,) = load_recipe(down, overrides)
    folders = [run.upstream.folder, run.folder]
    _wait_until(lambda: all(not s.live for s in run_states(folders)), 180, "both ended")
    upstream, downstream = run_states(folders)
    assert upstream.state == "failed" and "smaller than one batch" in upstream.detail, upstream
    assert downstream.state == "failed" and "CANCELLED" in downstream.detail, downstream
    job = read_submission(run.folder)["job_id"]
    # cancelled without ever starting; its recorded reason is the dependency's where the scheduler had
    # looked at the job before it was cancelled, else None (an upstream that fails within seconds). Its
    # Start is None, or the moment it was cancelled (slurmctld stamps a pending job's start and end times
    # when it cancels it, and sacct shows them where the record reached the database by then): never
    # a run time
    _wait_until(lambda: _sacct(job, "State")[0].startswith("CANCELLED"), 60, "cancelled in sacct")
    state, reason, start, end, elapsed = _sacct(job, "State,Reason,Start,End,Elapsed")
    assert reason.startswith("Dependency") or reason == "None", (state, reason)
    assert start in ("None", "Unknown", end) and elapsed == "00:00:00", (state, start, end, elapsed)
    assert not (run.folder / "config.yaml").exists()  # it never started


def _task_pid(job: str, rank: int) -> int:
    """The pid of the Slurm task of `rank` in `job` (its environment says which; `scancel` has no way to
    signal one task of a step)."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ours = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode()} <= set(environ)
        python = Path(command.split(b"\0")[0].decode()).name.startswith("python")  # not srun: rank 0's too
        if ours and python and b"submitit.core._submit" in command:
            return int(entry.name)
    raise AssertionError(f"no task of rank {rank} in Slurm job {job}")


def test_a_killed_rank_ends_the_slurm_job_is_named_and_the_rerun_resumes(tmp_path):
    from harness.lifecycle import run_states
    from harness.recipe import load_recipe
    from harness.results import read_metrics
    from tests.test_harness_train import _run_to_end, _same_training

    recipe = write_tiny(tmp_path, tmp_path / "slurm-runs")
    overrides = [
        *TINY_OVERRIDES,
        "epochs=4",
        "data.synthetic.train_per_class=64",
        "resources.tasks_per_node=2",
        "train.collective_timeout_s=30",
    ]
    slurm = ["--rows", "base", *overrides, *SLURM_OVERRIDES, "resources.mem_gb=4"]
    (run, _) = load_recipe(recipe, overrides)[1]
    assert _harness("run", str(recipe), *slurm).returncode == 0
    _wait_until(lambda: len(read_metrics(run.folder)) >= 1, 150, "1 epoch in")
    job = run_states([run.folder])[0].job.split()[1]
    os.kill(_task_pid(job, 0), signal.SIGKILL)  # the trainer lock's holder, and the rendezvous's host
    _wait_until(lambda: not run_states([run.folder])[0].live, 60, "ended after rank 0 was killed")
    state = run_states([run.folder])[0]
    assert state.state == "failed" and "vanished: the process of rank 0" in state.detail, state
    assert _harness("run", str(recipe), *slurm).returncode == 0  # as a requeue would
    _wait_until(lambda: (run.folder / "result.json").exists(), 150, "done after the rerun")
    reference = tmp_path / "local-runs"
    local = [*overrides, "launcher=local", f"runs_root={reference}", f"launcher.folder={tmp_path / 'local'}"]
    _run_to_end("run", str(recipe), "--rows", "base", *local)
    (straight, _) = load_recipe(recipe, local)[1]
    assert straight.uid == run.uid
    _same_training(read_metrics(run.folder), read_metrics(straight.folder))


def test_every_engine_runs_on_two_slurm_tasks(tmp_path):
    """MoCo-v3, DINO, the linear probe, the evaluation (Jaccard), fine-tuning and the segmentation, each
    submitted with --ntasks-per-node=2, end with a result.json that records world_size 2; the pre-training
    runs equal their 1-process runs figure for figure (drop path 0; tests/test_world_invariance.py checks
    every engine so through the local launcher)."""
    from harness.lifecycle import run_states
    from harness.recipe import load_recipe
    from harness.results import read_metrics, read_result
    from tests.test_engines import _downstream
    from tests.test_harness_train import _run_to_end
    from tests.test_segmentation import UPSTREAM as PVT
    from tests.test_segmentation import _downstream as _segmentation
    from tests.test_ssl_engines import _recipes
    from tests.test_world_invariance import _same_records

    # local-scale recipes (the SSL ones) ask for local.cpus per task: 1, so that 2 tasks fit the node
    two = [*SLURM_OVERRIDES, "resources.tasks_per_node=2", "resources.mem_gb=4", "local.cpus=1"]
    off = ["protocol.drop_path=0"]
    pretraining, probes = _recipes(tmp_path)
    _run_to_end("run", str(pretraining), "--rows", "dino")  # the probes' upstream, inline
    vit = write_tiny(tmp_path, tmp_path / "runs")
    vit.write_text(vit.read_text().replace("epochs: 3", "epochs: 1") + "protocol: {batch_size: 16}\n")
    _run_to_end("run", str(vit), "--rows", "base")
    finetune = _downstream(tmp_path, vit, name="ft")
    pvt = tmp_path / "pvt.yaml"
    pvt.write_text(PVT.replace("{runs}", str(tmp_path / "runs")))
    _run_to_end("run", str(pvt), "--rows", "pvt")
    segmentation = _segmentation(tmp_path, pvt)
    submissions = [(pretraining, off), (probes, []), (finetune, []), (segmentation, ["--rows", "seg"])]
    folders = []
    for recipe, args in submissions:
        proc = _harness("run", str(recipe), *args, *two)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rows = args[1:] if args[:1] == ["--rows"] else None
        folders += [
            r.folder
            for r in load_recipe(recipe, [a for a in args if "=" in a])[1]
            if not rows or r.rows == rows
        ]
    assert len(folders) == 6
    _wait_until(lambda: all(not s.live for s in run_states(folders)), 480, "every run ended")
    assert [s.state for s in run_states(folders)] == ["done"] * 6, run_states(folders)
    engines = [read_result(folder)[0] for folder in folders]
    assert [r.engine for r in engines] == [
        "dino",
        "mocov3",
        "linear_probe",
        "evaluate",
        "finetune",
        "segmentation",
    ]
    assert all(r.provenance["world_size"] == 2 for r in engines)
    reference = tmp_path / "one"
    reference.mkdir()
    alone, _ = _recipes(reference)
    _run_to_end("run", str(alone), *off)
    for got, expected in zip(folders[:2], (r.folder for r in load_recipe(alone, off)[1]), strict=True):
        _same_records(read_metrics(got), read_metrics(expected), rel=1e-5)
