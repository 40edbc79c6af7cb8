"""A run killed right after its first checkpoint, then resumed, against the same run trained straight
through: every checkpoint part and every metric but the timings bit for bit."""

from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from harness.core import checkpoint
from harness.core.result import Result
from harness.engines import train_run
from harness.results import CHECKPOINT, read_metrics, run_dir

TIMINGS = ("seconds", "train_seconds", "images_per_s")  # the keys of metrics.jsonl that measure time


def checkpoint_states(path: Path) -> dict[str, Any]:
    """A checkpoint's parts and progress (not its records, state and random streams)."""
    saved = checkpoint.load(path, "test")
    return {key: saved[key] for key in saved if key not in ("records", "state", "rng")}


def assert_equal(a: Any, b: Any, where: str = "") -> None:
    """Tensors, mappings and sequences of them equal bit for bit; `where` names the key that differs."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


class Killed(Exception):
    """Stands for a job killed right after its first epoch's checkpoint."""


def resumed_like(straight: Path, config: dict[str, Any], uid: str, store: Path, monkeypatch) -> Result:
    """The run of `config` trained again in `store`, killed after its first epoch's checkpoint and
    resumed: its checkpoint and metrics (but the timings) are asserted bit for bit those of the run
    trained straight through in `straight` (its folder)."""
    config = {**config, "runs_root": str(store)}
    real_save = checkpoint.save

    def save_then_die(path: Path, payload: dict[str, Any]) -> None:
        real_save(path, payload)
        if path.name == CHECKPOINT and payload["epoch"] == 1:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train_run(config, uid)
    monkeypatch.undo()
    result = train_run(config, uid)  # resumes at epoch 2
    folder = run_dir(OmegaConf.create(config), uid)
    assert_equal(checkpoint_states(folder / CHECKPOINT), checkpoint_states(straight / CHECKPOINT), uid)
    untimed = [
        [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(f)]
        for f in (folder, straight)
    ]
    assert untimed[0] == untimed[1]  # losses, top-1, schedules
    assert [r["epoch"] for r in read_metrics(folder)] == [1, 2]
    return result
