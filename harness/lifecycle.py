"""What each run is doing, from three witnesses: the run folder (result, failures of each rank, the
trainer's lock), `submitted.json` (the job that was submitted for it and where its logs are) and the
scheduler (sacct through submitit for Slurm jobs; the process table for local jobs).

A run whose job is pending, running or requeued is live: `run` never launches it again and `--force`
refuses it unless `--cancel` is given.
"""

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from harness.core.result import Result
from harness.processes import process_alive, stop_local_job
from harness.records import HEARTBEAT, JOB_ID, LOCK, SUBMITTED, read_object
from harness.results import atomic_write_json, read_metrics, run_status

LIVE = ("pending", "running", "requeued")
SLURM_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "RESIZING", "SIGNALING", "STAGE_OUT"}
SLURM_WAITING = {"PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SUSPENDED"}


@dataclass
class RunState:
    state: str  # not submitted | pending | running | requeued | interrupted | done | failed
    detail: str = ""
    job: str = ""  # e.g. "slurm 1234_5", "local 4242@host"
    logs: str = ""  # the job's stderr log
    result: Result | None = None  # result.json, checked, when done (read once, for the report too)

    @property
    def live(self) -> bool:
        return self.state in LIVE


def record_submission(folder: Path, launcher: str, job: submitit.Job) -> None:
    """`submitted.json`: which job trains the run and where its logs are; written when it is submitted."""
    atomic_write_json(
        folder / SUBMITTED,
        {
            "launcher": launcher,
            "job_id": str(job.job_id),
            "host": socket.gethostname(),
            "submitted_at": time.time(),
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        },
    )


def read_submission(folder: Path) -> dict[str, Any] | None:
    """submitted.json, checked (None if there is none or it is broken: `status` lists it)."""
    return read_object(folder / SUBMITTED)[0]


def _slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job, from one sacct call (submitit's watcher asks for all registered jobs)."""
    if not job_ids or shutil.which("sacct") is None:  # no scheduler here to ask: the states stay UNKNOWN
        return {}
    jobs = [submitit.SlurmJob(folder=Path("."), job_id=job_id) for job_id in job_ids]
    jobs[0].watcher.update()
    return {job.job_id: job.watcher.get_state(job.job_id, mode="cache").split()[0] for job in jobs}


def _local_alive(submission: dict[str, Any]) -> bool:
    """A local job is alive while its controller process is (on another host we cannot tell: alive)."""
    if submission.get("host") != socket.gethostname():
        return True
    return process_alive(local_pid(submission))


def local_pid(submission: dict[str, Any]) -> int:
    """A local job's id is its controller's pid (0, no process, for an array-style id)."""
    job_id = submission["job_id"]
    return int(job_id) if job_id.isdigit() else 0


def _epochs(folder: Path) -> str:
    """Epochs logged, and where the trainer is in the next one (from its heartbeat)."""
    epochs = len(read_metrics(folder))
    done = f"{epochs} epoch(s) done"
    beat = read_object(folder / HEARTBEAT)[0] or {}
    if beat.get("steps") and beat.get("epoch", 0) > epochs and "step" in beat:
        return f"{done}, epoch {beat['epoch']} step {beat['step']}/{beat['steps']}"
    return done


def run_states(folders: list[Path]) -> list[RunState]:
    """The state of each run folder; the scheduler is asked once for all the Slurm jobs among them."""
    submissions = [read_submission(folder) for folder in folders]
    slurm = _slurm_states([s["job_id"] for s in submissions if s and s["launcher"] == "slurm"])
    return [
        _state(folder, submission, slurm) for folder, submission in zip(folders, submissions, strict=True)
    ]


def _state(folder: Path, submission: dict[str, Any] | None, slurm: dict[str, str]) -> RunState:
    stored = run_status(folder)
    if submission is None:  # never submitted, or trained inline: its trainer's lock says whether it lives
        if stored.state in ("done", "failed"):
            return RunState(stored.state, stored.detail, result=stored.result)
        holder = read_object(folder / LOCK)[0]
        if holder is not None and _holder_alive(holder, job_id=""):
            return RunState("running", _epochs(folder), f"{holder.get('launcher')} pid {holder.get('pid')}")
        if (folder / "checkpoint.pt").exists():
            return RunState("interrupted", f"{_epochs(folder)}; `run` resumes it")
        return RunState("not submitted")
    job = f"{submission['launcher']} {submission['job_id']}"
    logs = submission.get("stderr", "")
    if stored.state in ("done", "failed"):
        return RunState(stored.state, stored.detail, job, logs, stored.result)
    if submission["launcher"] == "slurm":
        state = slurm.get(submission["job_id"], "UNKNOWN")
        if state in SLURM_RUNNING:
            return RunState("running", _epochs(folder), job, logs)
        if state in SLURM_WAITING or state == "UNKNOWN":  # UNKNOWN: not in accounting yet
            resumes = (folder / "checkpoint.pt").exists()
            return RunState("requeued" if resumes else "pending", f"Slurm: {state}", job, logs)
        return RunState("failed", f"Slurm: {state} (no result; see the log)", job, logs)
    if _local_alive(submission):
        return RunState("running", _epochs(folder), f"{job}@{submission.get('host')}", logs)
    return RunState("failed", "the local job ended without a result (killed?)", job, logs)


def cancel(submission: dict[str, Any]) -> None:
    """Stop the job that trains a run: scancel for Slurm; a local job and every process it started, on
    this host, whatever signals they ignore (`harness.processes.stop_local_job`)."""
    if submission["launcher"] == "slurm":
        submitit.SlurmJob(folder=Path("."), job_id=submission["job_id"]).cancel(check=True)
    elif submission.get("host") == socket.gethostname():
        stop_local_job(local_pid(submission))


class RunLocked(RuntimeError):
    """Another live trainer holds the run: this one does not start (and writes nothing in its folder)."""


def _holder_alive(holder: dict[str, Any], job_id: str) -> bool:
    if holder.get("job_id") == job_id and job_id != "inline":
        return False  # the same job, requeued: its earlier start is gone
    if holder.get("host") == socket.gethostname():
        return process_alive(holder["pid"])
    if holder.get("launcher") == "slurm" and JOB_ID.test(holder["job_id"]):  # sacct refuses other ids
        return _slurm_states([holder["job_id"]]).get(holder["job_id"]) in SLURM_RUNNING
    return True  # another machine's process: we cannot tell, so it is taken as alive


@contextlib.contextmanager
def trainer_lock(folder: Path, job_id: str, launcher: str) -> Iterator[None]:
    """Hold `trainer.lock` (created with O_EXCL: job id, launcher, host, pid) while training a run.

    A lock whose holder is gone (its process on this host, its Slurm job, or this very job before a
    requeue) is stale and taken over; a live holder raises RunLocked before the run folder is touched.
    Two trainers that find the same stale lock at the same instant can both take it over: the scheduler
    checks of `harness run` keep that from happening in practice.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    me = {"job_id": job_id, "launcher": launcher, "host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_object(path)[0]
            if holder is not None and _holder_alive(holder, job_id):
                raise RunLocked(
                    f"{folder} is being trained by job {holder.get('job_id')} on {holder.get('host')} "
                    f"(pid {holder.get('pid')}): a second trainer does not start"
                ) from None
            path.unlink(missing_ok=True)  # stale (or unreadable: a crash while it was written)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunLocked(f"{path} could not be taken: other trainers keep creating it")
    try:
        yield
    finally:
        if read_object(path)[0] == me:
            path.unlink(missing_ok=True)
