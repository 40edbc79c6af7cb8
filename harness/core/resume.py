"""A run's checkpoint, its parts named once: one mapping of checkpoint keys to objects saves them (every
epoch, or every `checkpoint_every` iterations) and restores them on a resume, with the metric records, the
run's counters (`state`) and every rank's random streams, so that a resumed run computes what an
uninterrupted one does. A checkpoint that lacks a part is refused naming the file and the part."""

from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

from harness import distributed
from harness.core import checkpoint
from harness.core.rng import gathered_rng_state, resume_rng_state
from harness.provenance import record_start
from harness.results import CHECKPOINT

BESIDE_PARTS = ("records", "state", "rng")  # and the progress key (epoch or iteration)


class Part(Protocol):
    """A module, an optimizer, a schedule, a precision's scaler: whatever has a state to save."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], /) -> Any: ...


class Resumable:
    """`parts`: checkpoint key -> the object saved and restored under it. `model` is what downstream runs
    load (`harness.core.checkpoint.load_model`); where it is a sub-module of another part (the
    self-supervised engines' backbones) a resume loads the same values twice. `progress`: the key of the
    count of epochs or iterations done."""

    def __init__(
        self, folder: Path, world: distributed.World, parts: dict[str, Part], progress: str = "epoch"
    ) -> None:
        self.path, self.world, self.parts, self.progress = folder / CHECKPOINT, world, parts, progress

    def resume(self, cfg: DictConfig, uid: str, state: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """(the metric records, the epoch or iteration to start from): ([], 0) on a fresh start; otherwise
        every part loaded, `state` updated and this rank's random streams resumed from the checkpoint. The
        provenance records the start first, so that a resume on other code is refused before the
        checkpoint is used."""
        saved = checkpoint.load(self.path, uid) if self.path.exists() else None
        if saved is not None:
            missing = [key for key in (*self.parts, self.progress, *BESIDE_PARTS) if key not in saved]
            if missing:
                raise checkpoint.CheckpointMismatch(
                    f"{uid}: checkpoint {self.path} has no {', '.join(missing)} "
                    f"(it holds {', '.join(sorted(saved))})"
                )
        if self.world.is_main:
            done = saved[self.progress] if saved is not None else 0
            record_start(self.path.parent, self.world.job_id, done, cfg.train.allow_code_change)
        if saved is None:
            return [], 0
        for key, part in self.parts.items():
            part.load_state_dict(saved[key])
        state.update(saved["state"])
        resume_rng_state(saved["rng"], self.world.rank)
        return saved["records"], saved[self.progress]

    def save(self, done: int, records: list[dict[str, Any]], state: dict[str, Any]) -> None:
        """The checkpoint after `done` epochs or iterations. A collective call: every rank's random state is
        gathered; rank 0 writes."""
        rngs = gathered_rng_state(self.world.size)
        if self.world.is_main:
            parts = {key: part.state_dict() for key, part in self.parts.items()}
            payload = {**parts, self.progress: done, "records": records, "state": state, "rng": rngs}
            checkpoint.save(self.path, payload)
