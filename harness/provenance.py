"""Where a number came from: code version, packages, machine, world size; recorded at every start and
resume of a run (`provenance.jsonl`), so that a run resumed on other code is refused, not silently mixed."""

import json
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import torch

from harness.records import SPECS, STARTS, decode, read_text

PACKAGES = ("sar-vit", "torch", "torchvision", "timm", "numba", "numpy", "omegaconf", "submitit")
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


LOG = STARTS
HOW_TO_RESUME = (
    "resume with --allow-code-change (train.allow_code_change=true), or train it again with --force"
)


class CodeChanged(RuntimeError):
    """A run would resume on a commit other than the one it started on."""


def code_version() -> dict:
    """The commit and dirty flag of the code this process runs, and the folder it lies in (a code
    snapshot is a shallow clone of the commit with the working tree's tracked files copied over)."""
    status = _git("status", "--porcelain")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(status) if status is not None else None,
        "code_dir": str(REPO),
    }


def record_start(folder: Path, job_id: str, epoch: int, allow_code_change: bool) -> None:
    """Append this start (epoch 0) or resume to the run's provenance log; refuse a resume on another
    commit than the run's first start unless `allow_code_change`."""
    log = folder / LOG
    text, problem = read_text(log)
    first, problem = decode(text.splitlines()[0], SPECS[LOG], f"{LOG} line 1") if text else (None, problem)
    if problem and epoch and not allow_code_change:
        raise CodeChanged(
            f"{problem}: the commit the run started on is unknown, so a resume at epoch {epoch} is refused: "
            + HOW_TO_RESUME
        )
    entry = {
        "time": time.time(),
        "event": "resume" if epoch else "start",
        "epoch": epoch,
        "job_id": job_id,
        "host": socket.gethostname(),
        **code_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
    started, now = (first or {}).get("git_commit"), entry["git_commit"]
    if epoch and started and now and started != now and not allow_code_change:
        raise CodeChanged(
            f"the run started on commit {started[:12]} and would resume at epoch {epoch} on {now[:12]}: "
            + HOW_TO_RESUME
        )
    with open(log, "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def provenance(world_size: int, seed: int, recipe_file: str, recipe_sha256: str) -> dict:
    return {
        **code_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "world_size": world_size,
        "seed": seed,
        "recipe_file": recipe_file,
        "recipe_sha256": recipe_sha256,
    }
