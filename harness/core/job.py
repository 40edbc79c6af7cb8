"""The life of one job around its engine: the trainer lock (never two trainers in a run folder), the
heartbeat, a failure file per rank saying why it stopped (a survivor writes a killed peer's), and the
run's result.json, written here once from what the engine returns."""

import contextlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from harness import distributed
from harness.core.peers import Peer, failure_name, gather, vanished, vanished_reason
from harness.core.result import Outcome, Result
from harness.lifecycle import RunLocked, trainer_lock
from harness.provenance import provenance
from harness.results import atomic_write_json, diverged, run_dir, touch_heartbeat, write_config, write_result

Engine = Callable[[DictConfig, str, distributed.World, Path], Outcome]


class RunFailed(RuntimeError):
    """The run cannot go on (e.g. the loss stayed non-finite); the reason lands in failure.json."""


class Heartbeat:
    """Says the job is alive, and where it is, at most every `every_s` seconds."""

    def __init__(self, folder: Path, job_id: str, every_s: float) -> None:
        self.folder, self.job_id, self.every_s, self.last = folder, job_id, every_s, time.monotonic()

    def due(self) -> bool:
        return time.monotonic() - self.last >= self.every_s

    def __call__(self, **progress: float) -> None:
        self.last = time.monotonic()
        touch_heartbeat(self.folder, self.job_id, **progress)


def run_job(engine: Engine, config: dict[str, Any], uid: str) -> Result:
    """Run `engine` on one resolved run (a `harness.config.schema.Run` as a dict); returns its result."""
    cfg = OmegaConf.create(config)
    world = distributed.setup(cfg.train.collective_timeout_s)
    folder = run_dir(cfg, uid)
    me = Peer(world.rank, socket.gethostname(), os.getpid())
    peers = [me]
    try:
        peers = gather(world, me.pid)
        with _exclusive(folder, world, cfg):
            if world.is_main:
                folder.mkdir(parents=True, exist_ok=True)
                for failure in folder.glob("failure*.json"):
                    failure.unlink()
                write_config(folder, cfg)
                touch_heartbeat(folder, world.job_id)
            outcome = engine(cfg, uid, world, folder)
            if why := diverged(outcome, cfg.train.max_skipped_fraction):  # a number, but not a result
                raise RunFailed(f"diverged: {why} (no result.json; the epochs are in metrics.jsonl)")
            result = _result(outcome, cfg, uid, world)
            if world.is_main:
                write_result(folder, result)
            return result
    except RunLocked:
        raise  # the live trainer's folder is not this process's to write in
    except Exception as error:  # every rank says why it stopped; the first to fail is the cause
        reason = str(error) if isinstance(error, RunFailed) else f"{type(error).__name__}: {error}"
        gone = vanished(peers, me, folder)
        for peer in gone:  # they cannot say it themselves, and fell silent first
            _write_failure(folder, peer, vanished_reason(peer), "")
        if gone:
            reason = f"rank(s) {', '.join(str(peer.rank) for peer in gone)} vanished, so: {reason}"
        _write_failure(folder, me, reason, traceback.format_exc())
        raise
    finally:
        distributed.teardown()


def _write_failure(folder: Path, rank: Peer, reason: str, trace: str) -> None:
    """`rank`'s failure file; a read-only folder must not hide why the run failed."""
    path = folder / failure_name(rank.rank)
    record = {"reason": reason, "rank": rank.rank, "host": rank.host, "time": time.time()}
    try:
        atomic_write_json(path, {**record, "traceback": trace} if trace else record)
    except OSError as unwritable:
        print(f"{path} could not be written ({unwritable}); the run failed: {reason}", file=sys.stderr)


def _result(outcome: Outcome, cfg: DictConfig, uid: str, world: distributed.World) -> Result:
    """The engine's outcome with its run, its GPU-hours (none on the CPU) and the provenance."""
    gpus = world.size if torch.cuda.is_available() else 0
    return Result.of(
        outcome,
        uid=uid,
        table=cfg.table,
        scale=cfg.scale,
        engine=cfg.engine,
        gpu_hours=outcome.wall_time_s * gpus / 3600,
        provenance=provenance(world.size, cfg.seed, cfg.recipe_file, cfg.recipe_sha256),
    )


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
