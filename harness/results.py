"""The run store: one folder per run, `runs/<table>/<uid>/`, written so that a crash never corrupts it.

config.yaml   the resolved run config (written once, before training)
metrics.jsonl one line per finished epoch (rewritten from the checkpoint on resume: no duplicates)
checkpoint.pt the last finished epoch (write to a temporary file, then rename)
checkpoint-best.pt  the model of the best validation epoch (downstream runs may start from it)
events.*      TensorBoard event files: losses, L_se, lr, validation metrics
result.json   a `harness.core.result.Result` (metrics, best, cost, provenance): its presence means "done"
failure.json  why a run stopped as failed (failure-rank<N>.json: another rank's own reason)
heartbeat     touched while a worker trains: recent means "running"

Every reader is total (`harness.records`): a broken file is a problem named in `status` and `report`.
"""

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config.identity import run_folder
from harness.core.result import Outcome, Result
from harness.records import (
    FAILURES,
    HEARTBEAT,
    LOCK,
    METRICS,
    PARTIAL,
    RESULT,
    STARTS,
    SUBMITTED,
    checkpoint_problem,
    read_lines,
    read_object,
)
from harness.text import one_line

HEARTBEAT_FRESH_S = 15 * 60
CHECKPOINT = "checkpoint.pt"  # the last finished epoch: everything needed to resume
BEST_CHECKPOINT = "checkpoint-best.pt"  # the model of the epoch with the best validation top-1
CHECKPOINTS = {"final": CHECKPOINT, "best": BEST_CHECKPOINT}  # what `from: {checkpoint: ...}` names


def checkpoint_path(folder: Path, which: str) -> Path:
    """The file a downstream run loads for `from: {checkpoint: final | best}`."""
    return folder / CHECKPOINTS[which]


def run_dir(config: DictConfig, uid: str) -> Path:
    return run_folder(Path(config.runs_root) / config.table, config.row, config.seed, uid)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a sibling temporary file, flush it to disk, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def writable_problem(folder: Path) -> str:
    """Why files cannot be written in `folder` ("" if they can): it is made if missing, then a temporary
    file is created in it and removed, so that a run or a report stops before it starts, not half-way."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return f"{folder} is not a folder this process can write in ({error.strerror or error})"
    return ""


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_config(folder: Path, config: DictConfig) -> None:
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(config))


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / METRICS, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(folder: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(folder / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def read_metrics_checked(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable line of metrics.jsonl, and the problems of the others (a crash mid-write, a broken
    disk, a hand edit)."""
    return read_lines(folder / METRICS)


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """Every readable line of metrics.jsonl (a truncated last line, from a crash, is skipped)."""
    return read_metrics_checked(folder)[0]


def touch_heartbeat(folder: Path, job_id: str, **progress: float) -> None:
    """Alive, and where: epoch, epochs, step, steps (of this epoch) and images_per_s while training."""
    atomic_write_json(
        folder / HEARTBEAT, {"time": time.time(), "job_id": job_id, "pid": os.getpid(), **progress}
    )


@dataclass
class Status:
    state: str  # done | running | failed | pending
    detail: str = ""
    result: Result | None = None  # result.json, checked, when done


def non_finite(metrics: dict[str, float]) -> str:
    """`top1 is nan` for the metrics a diverged run ends with ("" if every one is finite)."""
    return ", ".join(f"{name} is {value}" for name, value in metrics.items() if not math.isfinite(value))


def diverged(outcome: Outcome, max_skipped_fraction: float) -> str:
    """Why a finished run's outcome is no result ("" if it is one): a metric that is not finite, or more
    than `max_skipped_fraction` of its optimizer steps skipped for non-finite values."""
    reasons = [non_finite(outcome.metrics)]
    steps, skipped = outcome.steps, outcome.skipped_steps
    if steps and skipped > max_skipped_fraction * steps:
        share = f"{100 * skipped / steps:.0f} %, above train.max_skipped_fraction={max_skipped_fraction:g}"
        reasons.append(f"{skipped} of {steps} optimizer steps skipped for non-finite values ({share})")
    return "; ".join(reason for reason in reasons if reason)


def _metrics_line(result: Result) -> str:
    """`top1 45.20 (best 46.10), top5 80.00` or `imagenet_a_top1 22.39, mce 51.60`: a result in a line."""
    best = result.best.metrics if result.best is not None else {}
    parts = []
    for name, value in result.metrics.items():
        text = f"{name} {value:.2f}"
        if name in best:
            text += f" (best {best[name]:.2f})"
        parts.append(text)
    return ", ".join(parts)


def write_result(folder: Path, result: Result) -> None:
    """The run's result.json: written by the job wrapper once the engine is done (and by tests' stores)."""
    atomic_write_json(folder / RESULT, result.to_json())


def read_result(folder: Path) -> tuple[Result | None, str]:
    """The run's result.json (None if there is none), or (None, why it cannot be read)."""
    data, problem = read_object(folder / RESULT)
    return (Result.from_json(data), "") if data is not None else (None, problem)


def run_status(folder: Path) -> Status:
    """What the run folder says of its run (the scheduler is `harness.lifecycle`'s to ask); a broken file
    that decides the state makes the run failed, naming the file."""
    result, problem = read_result(folder)
    if problem:
        return Status("failed", problem)
    if result is not None:
        if not result.metrics:
            return Status("failed", f"{RESULT}: key 'metrics' is empty, expected metric names and values")
        if diverged := non_finite(result.metrics):
            return Status("failed", f"diverged: {RESULT} says {diverged}")
        return Status("done", _metrics_line(result), result)
    failures = [read_object(path, FAILURES) for path in sorted(folder.glob(FAILURES))]
    if failures:  # one file per failing rank: the first to fail is the cause, the others often follow it
        readable = [data for data, _ in failures if data is not None]
        if not readable:
            return Status("failed", failures[0][1])
        first = min(readable, key=lambda data: data.get("time", math.inf))
        rank = f"rank {first['rank']}: " if first.get("rank") else ""
        return Status("failed", one_line(rank + first["reason"]))
    beat = folder / HEARTBEAT
    if beat.exists() and time.time() - beat.stat().st_mtime < HEARTBEAT_FRESH_S:
        epochs = len(read_metrics(folder))
        return Status("running", f"{epochs} epoch(s) done")
    return Status("pending")


def problems(folder: Path) -> list[str]:
    """Every broken file of a run folder, each named: what `status` and `report` list beside the run."""
    return file_problems(folder) + read_metrics_checked(folder)[1]


def file_problems(folder: Path) -> list[str]:
    """`problems` but for metrics.jsonl's, for a reader that reads its lines anyway."""
    if folder.exists() and not folder.is_dir():
        return [f"{folder} is not a folder"]
    found = [read_object(folder / name)[1] for name in (RESULT, HEARTBEAT, SUBMITTED, LOCK, PARTIAL)]
    found += [read_object(path, FAILURES)[1] for path in sorted(folder.glob(FAILURES))]
    found += read_lines(folder / STARTS)[1]
    found += [checkpoint_problem(folder / name) for name in CHECKPOINTS.values()]
    return [problem for problem in found if problem]
