"""Launch resolved runs with submitit: Slurm job arrays (DDP, requeue on preemption), local subprocesses,
or inline in this process (debugging, tests)."""

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import submitit
import torch
from omegaconf import OmegaConf
from submitit.slurm.slurm import _make_sbatch_string

from harness.core.result import Result
from harness.engines import train_run
from harness.lifecycle import RunState, record_submission, run_states
from harness.processes import stop_local_job
from harness.progress import TableProgress
from harness.provenance import REPO
from harness.recipe import ResolvedRun
from harness.results import run_status
from harness.text import one_line

WAIT_POLL_S = 30.0  # how often a local downstream run asks whether its live upstream run has ended


class TrainJob(submitit.helpers.Checkpointable):
    """A run as a submitit job. On preemption or time-out submitit calls `checkpoint`, which (inherited)
    resubmits the same call; `train_run` then resumes from the run's last epoch checkpoint."""

    def __call__(self, config: dict, uid: str) -> Result:
        return train_run(config, uid)


def run_name(run: ResolvedRun) -> str:
    """`3f2a9c1e7b00 (table2 vit-s)`: a run as logs and errors name it."""
    return f"{run.uid} ({run.table} {','.join(run.rows)})"


def launcher_name(run: ResolvedRun) -> str:
    name = run.config.launcher.name
    if name == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return name


def _tasks(run: ResolvedRun, gpus: int) -> int:
    return run.config.resources.tasks_per_node or max(1, gpus)


def slurm_parameters(run: ResolvedRun, after: tuple[str, ...] = ()) -> dict[str, Any]:
    """The SlurmExecutor parameters (sbatch options) of a run's job; `--dry-run` shows them as #SBATCH."""
    r, launcher = run.config.resources, run.config.launcher
    mem_gb = r.mem_gb if r.mem_gb is not None else r.mem_gb_per_gpu * max(1, r.gpus_per_node)
    additional = OmegaConf.to_container(launcher.additional)
    if after:  # afterok: the job starts once they all succeeded, and is cancelled if one fails
        additional["kill_on_invalid_dep"] = "yes"
    parameters = {
        "job_name": f"sar-{run.table}",
        "time": r.timeout_min,
        "nodes": r.nodes,
        "ntasks_per_node": _tasks(run, r.gpus_per_node),
        "cpus_per_task": r.cpus_per_task,
        "gpus_per_node": r.gpus_per_node or None,  # a CPU job asks for no GPU at all
        "mem": f"{mem_gb}GB",
        "signal_delay_s": launcher.signal_delay_s,
        "array_parallelism": launcher.array_parallelism,
        "setup": list(launcher.setup) or None,
        "additional_parameters": additional or None,
        "dependency": f"afterok:{':'.join(after)}" if after else None,
        **{key: launcher[key] for key in ("partition", "account", "qos", "constraint", "gres", "exclude")},
    }
    return {key: value for key, value in parameters.items() if value is not None}


def sbatch_lines(run: ResolvedRun, array_size: int, after: tuple[str, ...] = ()) -> list[str]:
    """The #SBATCH lines submitit writes for a job array of `array_size` runs shaped like `run` (one run is
    submitted as a plain job). submitit has no public function for them: its private `_make_sbatch_string`
    is used here only, and tests/test_sbatch.py checks it against what submitit submits."""
    script = _make_sbatch_string(
        command="python -m submitit.core._submit",
        folder=_slurm_folder(run),
        map_count=array_size if array_size > 1 else None,
        **slurm_parameters(run, after),
    )
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def slurm_arrays(
    runs: list[ResolvedRun], after: dict[str, tuple[str, ...]] | None = None
) -> list[list[ResolvedRun]]:
    """Runs that share a table, a job shape and the jobs they wait for go as one job array."""
    arrays: dict[str, list[ResolvedRun]] = {}
    for run in runs:
        parameters = slurm_parameters(run, (after or {}).get(run.uid, ()))
        shape = repr((run.table, sorted(parameters.items()), run.config.launcher.max_num_timeout))
        arrays.setdefault(shape, []).append(run)
    return list(arrays.values())


def _folder(run: ResolvedRun) -> Path:
    return Path(run.config.launcher.folder)


def _slurm_folder(run: ResolvedRun) -> Path:
    """One folder per job (an array's become <array>_<index>), for its logs and pickles."""
    return _folder(run) / "%j"


def _executor(kind: str, run: ResolvedRun, after: tuple[str, ...] = ()) -> submitit.Executor:
    r = run.config.resources
    if kind == "local":  # the GPUs this machine has, at most the ones asked for; one task per GPU
        gpus = min(r.gpus_per_node, torch.cuda.device_count())
        # a flat folder: the local controller would create a literal %j
        executor = submitit.LocalExecutor(folder=_folder(run))
        executor.update_parameters(
            timeout_min=r.timeout_min, gpus_per_node=gpus, tasks_per_node=_tasks(run, gpus)
        )
        return executor
    executor = submitit.SlurmExecutor(
        folder=_slurm_folder(run), max_num_timeout=run.config.launcher.max_num_timeout
    )
    executor.update_parameters(**slurm_parameters(run, after))
    return executor


def _as_dict(run: ResolvedRun) -> dict:
    return OmegaConf.to_container(run.config, resolve=True)


class _Stopping:
    """While `harness run` waits for a local job, SIGTERM, SIGHUP (unless ignored, as under nohup) and
    SIGINT (unless ignored, as under a script's `&`) raise KeyboardInterrupt, so that the job is stopped
    with the command instead of training on, detached; one that comes while the job starts is held until
    the job is known. SIGINT and SIGTERM are handled here, never ignored, while the job starts: exec gives
    the job their defaults, so that it can be stopped however this process was started. (SIGKILL cannot be
    caught: the next `status` finds such a job through submitted.json.)"""

    def __enter__(self) -> "_Stopping":
        self.holding, self.held = False, ""
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        for sig, before in self.previous.items():
            if before is not signal.SIG_IGN or sig == signal.SIGTERM:
                signal.signal(sig, self._stop)
            elif sig == signal.SIGINT:  # ignored here still, but not by the job
                signal.signal(sig, lambda signum, frame: None)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _stop(self, signum: int, frame: object) -> None:
        if self.holding:
            self.held = signal.Signals(signum).name
        else:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """A stop that comes inside waits (for `check`): while the job starts, or is being stopped."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False

    def check(self) -> None:
        """Raise the stop held while the job started, if one came."""
        if self.held:
            raise KeyboardInterrupt(self.held)


@contextlib.contextmanager
def _code_snapshot(run: ResolvedRun) -> Iterator[None]:
    """With `launcher.snapshot`, jobs are submitted from a copy of the code taken now (submitit's
    RsyncSnapshot: the commit plus the working tree's tracked files), so a job that waits in the queue, or
    is requeued after a `git pull`, runs the code it was submitted with."""
    if not run.config.launcher.snapshot:
        yield
        return
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    with submitit.helpers.RsyncSnapshot(Path(run.config.runs_root) / "_snapshots" / stamp, root_dir=REPO):
        yield


def _outcome(run: ResolvedRun, wait: Callable[[], dict], log: Callable[[str], None]) -> bool:
    """Wait for one run trained on this machine; False if it failed."""
    try:
        wait()
    except Exception as error:  # the run's own failure file says why in a line; a job's error, in pages
        stored = run_status(run.folder)
        why = stored.detail if stored.state == "failed" else one_line(str(error)) or type(error).__name__
        log(f"{run_name(run)} failed: {why}")
        return False
    log(f"{run_name(run)} done: {run_status(run.folder).detail}")
    return True


def _run_locally(run: ResolvedRun, log: Callable[[str], None]) -> bool:
    """One run as a local submitit job, waited for; Ctrl-C, SIGTERM or SIGHUP stop the job with it."""
    with _Stopping() as stopping:
        with stopping.hold():
            job = _executor("local", run).submit(TrainJob(), _as_dict(run), run.uid)
        try:
            stopping.check()
            record_submission(run.folder, "local", job)
            log(f"{run_name(run)} running locally as job {job.job_id}")
            return _outcome(run, lambda: job.results()[0], log)
        except KeyboardInterrupt:  # the job would otherwise train on, detached from this command
            with stopping.hold():  # a second Ctrl-C does not leave it half-stopped
                stop_local_job(int(job.job_id))
            raise


def _upstream_ended(upstream: ResolvedRun, log: Callable[[str], None]) -> RunState:
    """The state of an upstream run launched elsewhere, once it is no longer live: a downstream run trained
    on this machine waits for it here (Ctrl-C stops waiting)."""
    state = run_states([upstream.folder])[0]
    if state.live:
        log(f"waiting for upstream {run_name(upstream)}: {state.state} as {state.job or 'an inline run'}")
    while state.live:
        time.sleep(WAIT_POLL_S)
        state = run_states([upstream.folder])[0]
    return state


def _blocked(run: ResolvedRun, outcome: dict[str, bool], log: Callable[[str], None]) -> str:
    """Why `run` cannot start on this machine (its upstream failed, or ended without a result), or ''.
    `outcome` holds what this call's runs came to (uid -> succeeded)."""
    up = run.upstream
    if up is None:
        return ""
    if up.uid in outcome:
        return "" if outcome[up.uid] else f"its upstream {run_name(up)} failed"
    state = _upstream_ended(up, log)
    return "" if state.state == "done" else f"its upstream {run_name(up)} is {state.state}"


def _launch_here(runs: list[ResolvedRun], outcome: dict[str, bool], log: Callable[[str], None]) -> None:
    """Inline and local runs, one at a time in the given order (they share this machine), each waited for;
    a run whose upstream did not succeed is skipped (and counts as failed)."""
    show = bool(runs) and runs[0].config.train.progress and sys.stderr.isatty()
    with TableProgress(len(runs), log, enabled=show) as progress:
        for run in runs:
            why = _blocked(run, outcome, progress.write)
            if why:
                progress.write(f"{run_name(run)} skipped: {why}")
                outcome[run.uid] = False
                continue
            progress.start(run.folder, run_name(run))
            if launcher_name(run) == "inline":
                train = lambda run=run: TrainJob()(_as_dict(run), run.uid)
                outcome[run.uid] = _outcome(run, train, progress.write)
            else:
                outcome[run.uid] = _run_locally(run, progress.write)
            progress.finish()


def _submit_to_slurm(
    runs: list[ResolvedRun],
    after: dict[str, tuple[str, ...]],
    outcome: dict[str, bool],
    log: Callable[[str], None],
) -> None:
    """One submission pass, in waves: the arrays of runs whose upstream is not in the pass go first, then
    those of their dependants, each waiting (`afterok`) for the job just submitted for its upstream."""
    jobs: dict[str, str] = {}  # uid -> the Slurm job submitted for it in this pass
    pending = list(runs)
    while pending:
        in_pass = {run.uid for run in pending}
        wave = [run for run in pending if run.upstream is None or run.upstream.uid not in in_pass]
        pending = [run for run in pending if run.upstream is not None and run.upstream.uid in in_pass]
        waits = {}
        for run in wave:
            up = run.upstream.uid if run.upstream is not None else ""
            if not outcome.get(up, True):  # its upstream was trained on this machine, and failed
                log(f"{run_name(run)} skipped: its upstream {run_name(run.upstream)} failed")
                outcome[run.uid] = False
                continue
            waits[run.uid] = (*after.get(run.uid, ()), *([jobs[up]] if up in jobs else []))
        for group in slurm_arrays([run for run in wave if run.uid in waits], waits):
            with _code_snapshot(group[0]):
                submitted = _executor("slurm", group[0], waits[group[0].uid]).map_array(
                    TrainJob(), [_as_dict(r) for r in group], [r.uid for r in group]
                )
            for run, job in zip(group, submitted, strict=True):
                record_submission(run.folder, "slurm", job)
                jobs[run.uid] = job.job_id
                waiting = f", after job {', '.join(waits[run.uid])}" if waits[run.uid] else ""
                log(f"{run_name(run)} submitted to Slurm as job {job.job_id}{waiting}")


def launch(
    runs: list[ResolvedRun],
    log: Callable[[str], None] = print,
    after: dict[str, tuple[str, ...]] | None = None,
) -> int:
    """Start `runs` (every upstream before its dependants) and return how many failed or were skipped.

    A run whose `.upstream` is among `runs` depends on it. Inline and local runs go one at a time, since
    they share this machine, and are waited for; one whose upstream failed is skipped, and one whose
    upstream is not among `runs` first waits for it to end. Slurm runs go in one pass as job arrays per
    table, job shape and dependencies, and are not waited for: a dependant's job waits (`afterok`: it is
    cancelled if the upstream fails) for its upstream's job submitted in the same pass, and for the jobs
    `after` names for its uid (live upstream jobs). Each submitted run's folder gets `submitted.json`."""
    outcome: dict[str, bool] = {}  # uid -> succeeded, for the runs trained on this machine
    _launch_here([run for run in runs if launcher_name(run) in ("inline", "local")], outcome, log)
    _submit_to_slurm([run for run in runs if launcher_name(run) == "slurm"], after or {}, outcome, log)
    return sum(not ok for ok in outcome.values())
