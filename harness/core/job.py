"""The life of one job around its engine: the trainer lock (never two trainers in a run folder), the
heartbeat, the provenance record, and a failure file per rank saying why it stopped."""

import contextlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import distributed
from harness.core import checkpoint
from harness.core.data import RunFailed
from harness.core.rng import resume_rng_state
from harness.lifecycle import RunLocked, trainer_lock
from harness.provenance import record_start
from harness.results import CHECKPOINT, atomic_write_json, diverged, run_dir, touch_heartbeat, write_config

Engine = Callable[[DictConfig, str, distributed.World, Path], dict[str, Any]]


def resume_point(
    cfg: DictConfig, uid: str, world: distributed.World, folder: Path, progress: str = "epoch"
) -> dict[str, Any] | None:
    """The run's last checkpoint (None: a fresh start), after the provenance records where the job starts
    (`progress`: the checkpoint's epoch or iteration), so that a resume on other code is refused before
    the checkpoint is used."""
    saved = checkpoint.load(folder / CHECKPOINT, uid) if (folder / CHECKPOINT).exists() else None
    if world.is_main:
        record_start(folder, world.job_id, saved[progress] if saved else 0, cfg.train.allow_code_change)
    return saved


def restore(
    saved: dict[str, Any], parts: dict[str, Any], state: dict[str, Any], rank: int, progress: str = "epoch"
) -> tuple[list[dict[str, Any]], int]:
    """Continue from a `resume_point` checkpoint: each of `parts` (checkpoint key -> object with
    `load_state_dict`) loaded, `state` updated, this rank's random streams resumed; returns (records, the
    epoch or iteration to start from)."""
    for key, part in parts.items():
        part.load_state_dict(saved[key])
    state.update(saved["state"])
    resume_rng_state(saved["rng"], rank)
    return saved["records"], saved[progress]


class Heartbeat:
    """Says the job is alive, and where it is, at most every `every_s` seconds."""

    def __init__(self, folder: Path, job_id: str, every_s: float) -> None:
        self.folder, self.job_id, self.every_s, self.last = folder, job_id, every_s, time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def __call__(self, **progress: float) -> None:
        self.last = time.monotonic()
        touch_heartbeat(self.folder, self.job_id, **progress)


def run_job(engine: Engine, config: dict[str, Any], uid: str) -> dict[str, Any]:
    """Run `engine` on one resolved run (a `harness.config.schema.Run` as a dict); returns its result."""
    cfg = OmegaConf.create(config)
    world = distributed.setup()
    folder = run_dir(cfg, uid)
    try:
        with _exclusive(folder, world, cfg):
            if world.is_main:
                folder.mkdir(parents=True, exist_ok=True)
                for failure in folder.glob("failure*.json"):
                    failure.unlink()
                write_config(folder, cfg)
                touch_heartbeat(folder, world.job_id)
            result = engine(cfg, uid, world, folder)
            if why := diverged(result, cfg.train.max_skipped_fraction):  # a number, but not a result
                raise RunFailed(f"diverged: {why} (no result.json; the epochs are in metrics.jsonl)")
            if world.is_main:
                atomic_write_json(folder / "result.json", result)
            return result
    except RunLocked:
        raise  # the live trainer's folder is not this process's to write in
    except Exception as error:  # every rank says why it stopped; the first to fail is the cause
        reason = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {error}"
        name = "failure.json" if world.is_main else f"failure-rank{world.rank}.json"
        record = {"reason": reason, "rank": world.rank, "host": socket.gethostname(), "time": time.time()}
        try:
            atomic_write_json(folder / name, {**record, "traceback": traceback.format_exc()})
        except OSError as unwritable:  # a read-only folder must not hide why the run failed
            print(
                f"{folder / name} could not be written ({unwritable}); the run failed: {reason}",
                file=sys.stderr,
            )
        raise
    finally:
        distributed.teardown()


@contextlib.contextmanager
def _exclusive(folder: Path, world: distributed.World, cfg: DictConfig) -> Iterator[None]:
    """Rank 0 holds the run's trainer lock for the whole run; every rank learns whether it got it."""
    with contextlib.ExitStack() as stack:
        refused: RunLocked | None = None
        if world.is_main:
            launcher = "slurm" if "SLURM_JOB_ID" in os.environ else cfg.launcher.name
            try:
                stack.enter_context(trainer_lock(folder, world.job_id, launcher))
            except RunLocked as error:
                refused = error
        if distributed.all_sum([float(refused is not None)], world)[0]:
            raise refused or RunLocked(f"{folder}: rank 0 found another live trainer")
        yield
