"""The protocol of each engine as its own schema, as Hydra's structured-config groups do it: a base for the
optimiser and its schedule, and a subclass per engine that adds what that engine reads. Each file of the
`recipes/protocol/` group names its schema first in its defaults list (`schema_supervised`, ...), so that
OmegaConf refuses an unknown key or a wrong value there, and a run keeps of the protocol its row names only
the fields of its engine's schema (`pick`): what an engine does not read is not part of its runs.
"""

import dataclasses
import functools
import typing
from dataclasses import dataclass
from enum import Enum
from typing import Any

from omegaconf import MISSING

from harness.config import RecipeError
from harness.config.choices import Amp, ProbeFeatures, Reported
from harness.config.fields import computed, incidental


@dataclass
class MoCoV3:
    """MoCo-v3's own settings (`recipes/protocol/mocov3.yaml`); optimiser and schedule: the protocol's."""

    momentum: float = computed()  # the momentum encoder's, cosine to 1 over training, per iteration
    temperature: float = computed()
    mlp_dim: int = computed()  # hidden width of the projector (3 layers) and the predictor (2 layers)
    dim: int = computed()  # output width of both
    stop_grad_conv1: bool = computed()  # the random patch projection is frozen
    crop_min: float = computed()  # RandomResizedCrop's smallest area
    blur_radius: list[float] = computed()  # [min, max] px of the Gaussian blur's radius, on every view


@dataclass
class Dino:
    """DINO's own settings (`recipes/protocol/dino.yaml`); optimiser and lr schedule: the protocol's."""

    out_dim: int = computed()  # prototypes of the head's last layer
    hidden_dim: int = computed()
    bottleneck_dim: int = computed()
    norm_last_layer: bool = computed()  # the last layer's weight-norm g frozen at 1
    momentum_teacher: float = computed()  # cosine to 1 over training, per iteration
    student_temp: float = computed()
    teacher_temp: float = computed()
    warmup_teacher_temp: float = computed()  # linear to teacher_temp over warmup_teacher_temp_epochs
    warmup_teacher_temp_epochs: int = computed()
    center_momentum: float = computed()
    weight_decay_end: float = computed()  # cosine from protocol.weight_decay, per iteration
    freeze_last_layer: int = computed()  # epochs during which the head's last layer gets no update
    global_crops_scale: list[float] = computed()
    local_crops_number: int = computed()
    local_crops_scale: list[float] = computed()
    local_crop_size: int = computed()  # px; the global crops are data.input_size
    blur_radius: list[float] = computed()  # [min, max] px of the Gaussian blur's radius, on every crop


@dataclass
class Probe:
    """A linear probe's own settings (`recipes/protocol/linear_probe_*.yaml`); SGD at protocol.lr."""

    features: ProbeFeatures = computed()
    momentum: float = computed()  # SGD's


@dataclass
class Segmentation:
    """Semantic FPN training and testing (`recipes/protocol/semantic_fpn.yaml`, Tab. 12); optimiser: the
    protocol's AdamW at protocol.lr, decayed by a poly schedule per iteration to protocol.min_lr."""

    iterations: int = computed()  # training length, in iterations of protocol.batch_size images
    poly_power: float = computed()
    eval_every: int = computed()  # iterations between validations (and after the last)
    checkpoint_every: int = incidental()  # iterations between checkpoints: resume is exact either way
    crop_size: int = computed()  # square training crop, px
    img_scale: list[int] = computed()  # [long side, short side] of the keep-ratio resize (train and test)
    ratio_range: list[float] = computed()  # training scale jitter of img_scale
    cat_max_ratio: float = computed()  # a crop is redrawn while one class covers this much of it
    flip_prob: float = computed()
    size_divisor: int = computed()  # test images are resized to multiples of it
    ignore_index: int = computed()  # the label of unlabelled and padded pixels
    neck_channels: int = computed()
    head_channels: int = computed()
    dropout: float = computed()  # before the classifier
    # a pyramid's [CLS] stage: its feature map from the patch tokens alone (false: PVT's segmentation
    # backbone) or with [CLS] among them as in the classifier (true); sar.models' `dense_cls`
    backbone_cls: bool = computed()


@dataclass
class ProtocolBase:
    """What every protocol says: its name, and the precision of the method's own code on CUDA (the CPU
    always computes in float32): bf16 | fp16 (with a GradScaler) | off; each file states its code's."""

    name: str = incidental()  # the protocol file; its values, not its name, decide what a run computes
    description: str = incidental("")
    amp: Amp = computed()


@dataclass
class EvaluationProtocol(ProtocolBase):
    """What an evaluation reads of the protocol its row names: the model as it was built, and DeiT's
    evaluation transform (resize to input_size / crop_pct, centre crop) for ImageNet-A."""

    drop_path: float = computed(0.0)  # inert in eval mode, but the model is built with it
    crop_pct: float = computed(0.875)  # DeiT's and timm's evaluation crop


@dataclass
class Protocol(ProtocolBase):
    """A training protocol's optimiser and schedule (Appendix D): what every training engine reads."""

    batch_size: int = computed()  # total over all GPUs
    lr: float = computed()
    lr_batch_ref: int | None = computed()  # lr scales with batch_size / lr_batch_ref; None: no scaling
    min_lr: float = computed()
    warmup_lr: float = computed()
    warmup_epochs: int = computed()
    lr_per_step: bool = computed()  # the cosine and its warm-up advance every iteration, not every epoch
    cooldown_epochs: int = computed()  # the last epochs at min_lr, after the cosine (timm train.py: 10)
    reports: Reported = incidental(Reported.final)  # what the original work reports (top-1)
    weight_decay: float = computed()
    opt_eps: float = computed()  # weight decay never applies to norms, biases and tokens (timm's factory)
    clip_grad: float | None = computed()
    drop_path: float = computed()
    repeated_aug: bool = computed()  # DeiT's repeated-augmentation sampler


@dataclass
class ClassificationProtocol(Protocol):
    """The classification pipeline's transforms (timm's `create_transform`), read by supervised training
    and by the linear probes."""

    auto_augment: str | None = computed()
    color_jitter: float = computed()
    reprob: float = computed()
    interpolation: str = computed()
    crop_pct: float = computed()


@dataclass
class SupervisedProtocol(ClassificationProtocol):
    """Supervised training from scratch or fine-tuning (DeiT, T2T, PVT, CvT, Swin, fine-tuning)."""

    model_ema_decay: float | None = computed()  # an exponential moving average of the weights; None: none
    smoothing: float = computed()
    mixup: float = computed()
    cutmix: float = computed()
    mixup_prob: float = computed()
    mixup_switch_prob: float = computed()


@dataclass
class ProbeProtocol(ClassificationProtocol):
    probe: Probe = computed(factory=Probe)


@dataclass
class MoCoV3Protocol(Protocol):
    mocov3: MoCoV3 = computed(factory=MoCoV3)


@dataclass
class DinoProtocol(Protocol):
    dino: Dino = computed(factory=Dino)


@dataclass
class SegmentationProtocol(Protocol):
    segmentation: Segmentation = computed(factory=Segmentation)


SCHEMA_PREFIX = "schema_"  # a protocol file's defaults list starts with schema_<engine>
_SCHEMAS: dict[str, type] = {}  # engine name -> its protocol schema, filled by harness.engines' registry


def register_schema(engine: str, schema: type) -> None:
    """Make `schema` the protocol schema of `engine` (the option `schema_<engine>` of the protocol group)."""
    _SCHEMAS[engine] = schema


def unregister_schema(engine: str) -> None:
    """Remove the protocol schema of `engine` (a test's own)."""
    _SCHEMAS.pop(engine, None)


def schemas() -> dict[str, type]:
    return dict(_SCHEMAS)


def any_protocol() -> type:
    """Every field of every registered protocol schema in one dataclass: what an override `protocol.KEY`
    may name, and the type its value is checked against."""
    return _union(tuple(dict.fromkeys(_SCHEMAS.values())))


@functools.cache
def _union(classes: tuple[type, ...]) -> type:
    fields: dict[str, tuple[Any, dataclasses.Field]] = {}
    for schema in classes:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            fields.setdefault(f.name, (hints[f.name], f))
    specs = [
        (name, annotation | None, dataclasses.field(default=None, metadata=f.metadata))
        for name, (annotation, f) in fields.items()
    ]
    return dataclasses.make_dataclass("AnyProtocol", specs, bases=(ProtocolBase,))


def pick(schema: type, protocol: dict[str, Any], engine: str) -> dict[str, Any]:
    """The fields of `protocol` (a composed protocol, as a dict) that `engine`'s `schema` has; where the
    protocol lacks one, its default, and an error naming what it lacks (its sections first) if it has none."""
    picked, missing = {}, []
    for f in dataclasses.fields(schema):
        value = protocol.get(f.name)
        section = f.default_factory is not dataclasses.MISSING
        if value is not None or (f.name in protocol and not section):
            picked[f.name] = value
        elif f.default not in (dataclasses.MISSING, MISSING):
            picked[f.name] = f.default.value if isinstance(f.default, Enum) else f.default
        else:
            missing.append((not section, f"a '{f.name}' section" if section else f"'{f.name}'"))
    if missing:
        first, *rest = [name for _, name in sorted(missing)]
        nor = f" (nor {', '.join(rest)})" if rest else ""
        raise RecipeError(
            f"key 'protocol': got '{protocol.get('name')}', expected a protocol with {first}{nor}, which "
            f"engine {engine} reads: one written for it (its defaults list starts with "
            f"{SCHEMA_PREFIX}{engine})"
        )
    return picked
