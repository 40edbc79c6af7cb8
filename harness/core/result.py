"""What a run came to, typed and versioned. An engine returns its `Outcome` (metrics, best validation,
step counts, wall time, its own extras); the job wrapper (`harness.core.job.run_job`) adds who ran and what
it cost, and writes the `Result` once, as result.json. Readers build it with `Result.from_json`, which reads
the release before this one's files too (no `version`: an engine's extras at the top level)."""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

VERSION = 1  # result.json's layout; a reader refuses a newer one
WHEN = ("epoch", "iteration")  # the keys of `best` that say when, beside its metrics


@dataclass(frozen=True)
class Best:
    """The validation with the best first metric: its metrics, and its epoch or iteration."""

    metrics: dict[str, float]
    epoch: int | None = None
    iteration: int | None = None

    def to_json(self) -> dict[str, float]:
        """Flat, as result.json has always held it: `{"top1": 72.0, "epoch": 3}`."""
        when = {key: getattr(self, key) for key in WHEN if getattr(self, key) is not None}
        return {**self.metrics, **when}

    @classmethod
    def from_json(cls, data: dict[str, float]) -> "Best":
        metrics = {key: value for key, value in data.items() if key not in WHEN}
        return cls(metrics, data.get("epoch"), data.get("iteration"))


@dataclass(frozen=True)
class Extra:
    """What an engine measures besides its metrics, None where it does not. The report reads the
    ImageNet-C errors and the Jaccard's void rule; the rest is for people reading result.json."""

    reported: dict[str, Any] | None = None  # the top-1 the paper prints: {what: final|best|best_ema, top1}
    ema: dict[str, float] | None = None  # the EMA model's top1, best_top1, best_epoch
    chance_top1: float | None = None  # a linear probe's floor
    features: str | None = None  # a linear probe's features (last4 | final)
    imagenet_c_errors: dict[str, list[float]] | None = None  # per corruption, the error of each severity
    mce_reference: str | None = None  # what normalised `mce` (None: the report normalises by a row)
    jaccard_void: str | None = None  # VOC's void pixels excluded or included
    jaccard_images_without_object: int | None = None  # left out of the Jaccard
    aacc: float | None = None  # segmentation: pixel accuracy, mean class accuracy, per-class IoU
    macc: float | None = None
    per_class_iou: list[float | None] | None = None
    majority_miou: float | None = None  # the mIoU of predicting the most frequent class everywhere
    iterations: int | None = None
    upstream_keys_unused: list[str] | None = None  # the upstream checkpoint's keys the model left out

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Extra":
        """The known keys of `data` (those of an older or newer harness are left out)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What an engine returns: what its run measured."""

    metrics: dict[str, float]  # named as harness.eval.METRICS names them; the final epoch's or iteration's
    best: Best | None = None  # None: the engine does not validate during training
    epochs: int = 0  # 0 for the engines counted in iterations or that do not train
    wall_time_s: float = 0.0
    steps: int = 0  # optimizer steps, those skipped for non-finite values included
    skipped_steps: int = 0
    extra: Extra = field(default_factory=Extra)


@dataclass(frozen=True, kw_only=True)
class Result(Outcome):
    """An `Outcome` with its run and its cost: result.json. The defaults stand for what an older
    harness did not write."""

    uid: str = ""
    table: str = ""
    scale: str = ""
    engine: str = ""
    gpu_hours: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)  # code, packages, host, GPUs, seed, recipe
    version: int = VERSION  # 0: read from a file without one (the release before this one)

    @classmethod
    def of(cls, outcome: Outcome, **run: Any) -> "Result":
        """`outcome` with the run's fields (uid, table, scale, engine, gpu_hours, provenance)."""
        return cls(**{f.name: getattr(outcome, f.name) for f in fields(Outcome)}, **run)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("best", "extra")}
        best = {"best": self.best.to_json()} if self.best is not None else {}
        return {**data, **best, "extra": self.extra.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Result":
        """result.json's object, its keys' kinds already checked (`harness.records`): a file without a
        `version` holds its extras at the top level."""
        version = data.get("version", 0)
        common = {
            f.name: data[f.name] for f in fields(cls) if f.name in data and f.name not in ("best", "extra")
        }
        best = Best.from_json(data["best"]) if "best" in data else None
        extra = Extra.from_json(data if version == 0 else data.get("extra", {}))
        return cls(**{**common, "version": version}, best=best, extra=extra)
