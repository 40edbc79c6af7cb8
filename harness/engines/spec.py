"""What an engine is, said once: each engine module ends with its `SPEC`, and `register` puts it in the
registry that validation, local scaling, the estimate, the run table, `list`, the report and the
benchmarks read. A new engine is one module (or, in a test, one `register` call)."""

import enum
from collections.abc import Callable
from dataclasses import dataclass

from omegaconf import DictConfig

from harness.config import RecipeError
from harness.config.protocols import register_schema, unregister_schema
from harness.core.job import Engine


class Consumes(enum.Enum):
    """What a run of the engine starts from."""

    nothing = "nothing"  # trains from scratch: a row names no upstream run
    backbone = "backbone"  # an upstream run's weights without its head (fine-tuning, probing, segmentation)
    model = "model"  # an upstream run's whole model, as it was trained (evaluation)


class Provides(enum.Enum):
    """What a downstream run loads from the engine's checkpoint (its `model`)."""

    nothing = "nothing"  # no model a downstream run could consume
    classifier = "classifier"  # the trained classifier, head included; validated every epoch (`best`)
    backbone = "backbone"  # a headless backbone (self-supervised pre-training): nothing validated


class Progress(enum.Enum):
    """The unit its training advances in: what its length, its checkpoints and its progress count."""

    none = "none"  # trains nothing (an evaluation)
    epoch = "epoch"
    iteration = "iteration"


@dataclass(frozen=True)
class EngineSpec:
    name: str
    run: Engine  # the job's body (harness.core.job.run_job wraps it)
    protocol: type  # its protocol schema (harness.config.protocols): what a run keeps of its protocol
    description: str  # one line, for `python -m harness list` and the docs
    consumes: Consumes
    provides: Provides
    progress: Progress
    loss: str  # its main loss, for the run table ("-": none); "+ lambda L_se" follows where SAR is on
    # FLOPs of one run, for the estimate: given the run and a function giving the forward GMACs of one image
    # of the run's model at a size (harness.estimate)
    cost: Callable[[DictConfig, Callable[[int], float]], float]
    metrics: tuple[str, ...]  # what its result.json holds (harness.eval.METRICS names, or its own)
    activity: str = ""  # what its epochs or iterations are of, in the report: "8 epochs of fine-tuning"
    # its length in its progress unit (epochs by default); an evaluation has none
    length: Callable[[DictConfig], int] = lambda cfg: cfg.epochs
    # the upstream runs it accepts, by what their checkpoints provide
    accepts: frozenset[Provides] = frozenset({Provides.classifier, Provides.backbone})
    # reads train.eval_every (validates during training): local scale sets it. An engine that does not
    # read it keeps its runs' uids whatever local scale's cadence
    validates: bool = False
    # measures on stand-ins sized by eval.standin_per_class (harness.core.data.synthetic_config)
    stand_ins: bool = False

    @property
    def trains(self) -> bool:
        return self.progress is not Progress.none


_REGISTRY: dict[str, EngineSpec] = {}


def register(spec: EngineSpec) -> EngineSpec:
    """Add `spec` to the registry (replacing an engine of the same name) and its protocol schema to the
    `protocol` config group as `schema_<name>`, the first entry of its protocol files' defaults lists."""
    _REGISTRY[spec.name] = spec
    register_schema(spec.name, spec.protocol)
    return spec


def unregister(name: str) -> None:
    """Remove an engine (a test's own) and its protocol schema."""
    _REGISTRY.pop(name, None)
    unregister_schema(name)


def engines() -> dict[str, EngineSpec]:
    """Every registered engine by name, the built-in ones first."""
    import harness.engines  # noqa: F401  (registers the built-in engines)

    return dict(_REGISTRY)


def spec_of(name: str, source: str = "") -> EngineSpec:
    """The engine `name`; an unknown one is a RecipeError naming `source` and the known engines."""
    known = engines()
    if name not in known:
        where = f"{source}: " if source else ""
        raise RecipeError(f"{where}key 'engine': got {name!r}, expected {' | '.join(known)}")
    return known[name]
