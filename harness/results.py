"""The run store: one folder per run, `runs/<table>/<uid>/`, written so that a crash never corrupts it.

config.yaml   the resolved run config (written once, before training)
metrics.jsonl one line per finished epoch (rewritten from the checkpoint on resume: no duplicates)
checkpoint.pt the last finished epoch (write to a temporary file, then rename)
checkpoint-best.pt  the model of the best validation epoch (downstream runs may start from it)
events.*      TensorBoard event files: losses, L_se, lr, validation metrics
result.json   final and best top-1, wall time, GPU-hours, provenance: its presence means "done"
failure.json  why a run stopped as failed (failure-rank<N>.json: another rank's own reason)
heartbeat     touched while a worker trains: recent means "running"
"""

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

HEARTBEAT_FRESH_S = 15 * 60
CHECKPOINT = "checkpoint.pt"  # the last finished epoch: everything needed to resume
BEST_CHECKPOINT = "checkpoint-best.pt"  # the model of the epoch with the best validation top-1
CHECKPOINTS = {"final": CHECKPOINT, "best": BEST_CHECKPOINT}  # what `from: {checkpoint: ...}` names


def checkpoint_path(folder: Path, which: str) -> Path:
    """The file a downstream run loads for `from: {checkpoint: final | best}`."""
    return folder / CHECKPOINTS[which]


def run_dir(config: DictConfig, uid: str) -> Path:
    return Path(config.runs_root) / config.table / uid


def atomic_write_text(path: Path, text: str) -> None:
    """Write a sibling temporary file, flush it to disk, then rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_config(folder: Path, config: DictConfig) -> None:
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(config))


def append_metrics(folder: Path, record: dict[str, Any]) -> None:
    with open(folder / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def rewrite_metrics(folder: Path, records: list[dict[str, Any]]) -> None:
    atomic_write_text(
        folder / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    )


def read_metrics_checked(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every complete line of metrics.jsonl, and a note for each line that is not (a crash mid-write)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return [], []
    records, problems = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            problems.append(f"metrics.jsonl line {number} is unreadable (truncated write?)")
    return records, problems


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """Every complete line of metrics.jsonl (a truncated last line, from a crash, is skipped)."""
    return read_metrics_checked(folder)[0]


def touch_heartbeat(folder: Path, job_id: str, **progress: float) -> None:
    """Alive, and where: epoch, epochs, step, steps (of this epoch) and images_per_s while training."""
    atomic_write_json(
        folder / "heartbeat", {"time": time.time(), "job_id": job_id, "pid": os.getpid(), **progress}
    )


@dataclass
class Status:
    state: str  # done | running | failed | pending
    detail: str = ""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_line(result: dict[str, Any]) -> str:
    """`top1 45.20 (best 46.10), top5 80.00` or `imagenet_a_top1 22.39, mce 51.60`: a result in a line."""
    best = result.get("best") if isinstance(result.get("best"), dict) else {}
    parts = []
    for name, value in result["metrics"].items():
        text = f"{name} {value:.2f}"
        if _is_number(best.get(name)):
            text += f" (best {best[name]:.2f})"
        parts.append(text)
    return ", ".join(parts)


def run_status(folder: Path) -> Status:
    if (folder / "result.json").exists():
        result = read_json(folder / "result.json")
        if result is None:
            return Status("failed", "result.json is unreadable")
        metrics = result.get("metrics")
        if not isinstance(metrics, dict) or not all(map(_is_number, metrics.values())):
            return Status("failed", "result.json has no metrics (a mapping of metric names to numbers)")
        return Status("done", _metrics_line(result))
    failures = sorted(folder.glob("failure*.json"))
    if failures:  # one file per failing rank: the first to fail is the cause, the others often follow it
        readable = [data for data in map(read_json, failures) if data is not None]
        if not readable:
            return Status("failed", f"{failures[0].name} is unreadable")
        first = min(readable, key=lambda data: data.get("time", math.inf))
        rank = f"rank {first['rank']}: " if first.get("rank") else ""
        return Status("failed", rank + first.get("reason", "no reason given"))
    beat = folder / "heartbeat"
    if beat.exists() and time.time() - beat.stat().st_mtime < HEARTBEAT_FRESH_S:
        epochs = len(read_metrics(folder))
        return Status("running", f"{epochs} epoch(s) done")
    return Status("pending")
