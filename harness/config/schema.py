"""The shape of a recipe and of one resolved run, as dataclasses registered in Hydra's ConfigStore.

Composing a recipe onto these schemas is what refuses typos (unknown keys), wrong types, values outside an
enum (harness.config.choices) and missing values before anything is launched. Every field of a run's
schema declares, where it is declared, whether it is part of what the run computes (`computed`: in the
run's uid, harness.config.identity) or only says how the run is named, shown, launched or stored
(`incidental`: outside the uid). A run's protocol is its engine's schema (harness.config.protocols).
`tests/test_config_identity.py` walks every field.
"""

import dataclasses
import enum
import functools
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from harness.config.choices import (
    Checkpoint,
    Crops,
    LauncherName,
    LossSchedule,
    LossVariant,
    Scale,
    Similarity,
)
from harness.config.fields import IDENTITY, computed, incidental
from harness.config.protocols import (
    ClassificationProtocol,
    DinoProtocol,
    EvaluationProtocol,
    MoCoV3Protocol,
    ProbeProtocol,
    Protocol,
    ProtocolBase,
    SegmentationProtocol,
    SupervisedProtocol,
    any_protocol,
)
from harness.data.synthetic import SyntheticConfig

__all__ = ["IDENTITY", "computed", "incidental"]
_SYNTHETIC = SyntheticConfig()


@dataclass
class Loss:
    sar: bool = computed(False)  # add lambda * L_se (Eq. 9) to the main loss
    weight: float = computed(0.01)  # lambda
    variant: LossVariant = computed(LossVariant.entropy)  # L_se (Eq. 9) or L_tv (Eq. 14, Appendix B)
    similarity: Similarity = computed(Similarity.dot)  # S of Eq. 4, or the cosine of Eq. 15 (Appendix B)
    # constant (the paper: lambda = 0.01 throughout) | warmup_cosine (the public code: linear from 0 over
    # warmup_epochs, then a cosine from lambda towards 0 at the last epoch, per epoch)
    schedule: LossSchedule = computed(LossSchedule.constant)
    warmup_epochs: int = computed(10)
    # DRLoc (Liu et al. 2021a, Tab. 13): lambda_drloc (0: off) and the pairs drawn per image
    drloc_weight: float = computed(0.0)
    drloc_pairs: int = computed(64)
    # multi-crop pre-training (DINO): L_se on the two global crops only, or on all crops
    crops: Crops = computed(Crops["global"])


def _partial(schema: type, name: str) -> type:
    """`schema` with every field optional and unset (None): what a recipe or a row changes of it, merged
    field by field over the recipe's and the schema's defaults (`harness.recipe.resolve`)."""
    hints = typing.get_type_hints(schema)
    fields = [
        (f.name, hints[f.name] | None, dataclasses.field(default=None)) for f in dataclasses.fields(schema)
    ]
    return dataclasses.make_dataclass(name, fields, namespace={"__doc__": f"A partial {schema.__name__}."})


RowLoss = _partial(Loss, "RowLoss")


@dataclass
class Synthetic:
    """The embedded synthetic dataset (harness.data.SyntheticConfig, whose defaults these are), used at
    local scale."""

    num_classes: int = computed(_SYNTHETIC.num_classes)
    image_size: int = computed(_SYNTHETIC.image_size)
    train_per_class: int = computed(_SYNTHETIC.train_per_class)
    val_per_class: int = computed(_SYNTHETIC.val_per_class)
    seed: int = computed(_SYNTHETIC.seed)
    min_object: float = computed(_SYNTHETIC.min_object)
    max_object: float = computed(_SYNTHETIC.max_object)
    shapes: int = computed(_SYNTHETIC.shapes)


@dataclass
class Data:
    dataset: str = computed()
    stands_for: str | None = incidental(
        None
    )  # at local scale: the paper's dataset the synthetic one replaces
    root: str | None = incidental(None)  # where the same dataset lies on this machine
    fraction: float = computed(1.0)
    fraction_seed: int = computed(0)
    input_size: int = computed(224)
    num_workers: int = incidental(8)
    synthetic: Synthetic = computed(factory=Synthetic)


@dataclass
class Resources:
    """What a job asks Slurm for, sized like DeiT's launcher: memory per GPU, a timeout that fits common
    partitions (a run that times out is requeued and resumes from its last epoch)."""

    nodes: int = incidental(1)
    gpus_per_node: int = incidental(8)
    cpus_per_task: int = incidental(10)
    # DDP processes per node; default: one per GPU (one on a CPU)
    tasks_per_node: int | None = incidental(None)
    mem_gb_per_gpu: int = incidental(40)  # a CPU-only job asks for one GPU's worth unless mem_gb is set
    mem_gb: int | None = incidental(None)  # memory per node; replaces mem_gb_per_gpu
    timeout_min: int = incidental(1440)
    assumed_tflops: float = incidental(30.0)  # effective throughput per GPU, for the GPU-hour estimate only
    assumed_cpu_gflops: float = incidental(20.0)  # per CPU job, for the CPU-hour estimate at local scale


@dataclass
class Launcher:
    """How runs are launched; the Slurm keys go to submitit's SlurmExecutor (sbatch options)."""

    # auto (slurm when sbatch is on the PATH, else local), slurm, local, inline
    name: LauncherName = incidental(LauncherName.auto)
    partition: str | None = incidental(None)
    account: str | None = incidental(None)
    qos: str | None = incidental(None)
    constraint: str | None = incidental(None)
    gres: str | None = incidental(None)
    exclude: str | None = incidental(None)
    setup: list[str] = incidental(factory=list)  # shell lines run before the job (module load, ...)
    signal_delay_s: int = incidental(120)  # USR2 this long before the time limit: checkpoint, requeue
    max_num_timeout: int = incidental(30)  # requeues after time-outs before the run fails (DeiT: 30)
    additional: dict[str, Any] = incidental(factory=dict)  # other sbatch options, e.g. {mail_type: END}
    array_parallelism: int = incidental(64)
    snapshot: bool = incidental(False)  # Slurm jobs run a copy of the code taken at submission
    folder: str | None = incidental(None)  # submitit's job folders; default: <runs_root>/_submitit


@dataclass
class Upstream:
    """The run a row starts from (finetune) or evaluates (evaluate): a row of another recipe, at the same
    scale and seed. Its uid, filled in when the recipe is resolved, is part of the downstream identity."""

    recipe: str = incidental()  # a recipe name in recipes/ (e.g. table2) or a path to a recipe file
    row: str = incidental()
    checkpoint: Checkpoint = computed(Checkpoint.final)
    uid: str = computed("")  # set by the resolver, never by hand
    folder: str = incidental("")  # the upstream run's folder, set by the resolver
    engine: str = incidental("")  # the upstream run's engine, set by the resolver (its uid says it too)


@dataclass
class Evaluation:
    """What an `evaluate` run measures (metric names of harness.eval.METRICS) and how."""

    metrics: list[str] = computed(factory=list)
    input_size: int | None = computed(None)  # None: the run's data.input_size (Tab. 6: 480, DINO-style)
    keep_mass: float = computed(0.6)  # the Jaccard keeps the smallest set of cells with this mass
    exclude_void: bool = computed(True)  # False: VOC's void pixels count, as SAR's public script does
    roots: dict[str, str] = incidental(factory=dict)  # evaluation dataset name -> its root on this machine
    batch_size: int = incidental(128)
    # at local scale, a stand-in's images per class (stand-in name -> count); unset: the synthetic val split's
    standin_per_class: dict[str, int] = computed(factory=dict)


@dataclass
class Train:
    max_nonfinite_steps: int = incidental(10)  # consecutive non-finite losses before the run fails
    # a run that skipped more of its optimizer steps for non-finite values ends failed (diverged), not done
    max_skipped_fraction: float = incidental(0.1)
    eval_every: int = computed(1)  # decides which epochs are evaluated, hence the best top-1
    log_every: int = incidental(50)  # steps between host syncs: the finiteness check, loss logging
    tensorboard: bool = incidental(True)  # event files in the run folder: losses, L_se, lr, val metrics
    heartbeat_every_s: float = incidental(2.0)  # how often a worker says where it is (progress, `status`)
    # how long a rank waits in a collective for its peers before the run fails (harness.distributed)
    collective_timeout_s: float = incidental(600.0)
    progress: bool = incidental(True)
    allow_code_change: bool = incidental(False)  # resume on another commit than the run started on


@dataclass
class Run:
    """One fully resolved run: everything the worker needs, nothing else."""

    table: str = incidental()  # the run store's folder: a figure may share a table's runs
    row: str = incidental()
    label: str = incidental()
    group: str = incidental("")
    column: str = incidental("")
    scale: Scale = computed(Scale.paper)
    engine: str = computed("supervised")  # a registered engine (harness.engines: `python -m harness list`)
    upstream: Upstream | None = computed(None)  # the run this one fine-tunes or evaluates
    model: str = computed()
    model_kwargs: dict[str, Any] = computed(factory=dict)
    last_block: str = computed("standard")
    loss: Loss = computed(factory=Loss)
    data: Data = computed(factory=Data)
    # the fields of its engine's protocol schema (harness.config.protocols.pick)
    protocol: ProtocolBase = computed(factory=SupervisedProtocol)
    epochs: int = computed()
    seed: int = computed(0)
    paper: dict[str, float] = incidental(factory=dict)  # metric name -> the paper's value
    paper_points: dict[int, float] = incidental(factory=dict)  # epoch -> top-1 quoted in the text (Fig. 3)
    train: Train = computed(factory=Train)
    eval: Evaluation = computed(factory=Evaluation)
    resources: Resources = incidental(factory=Resources)
    launcher: Launcher = incidental(factory=Launcher)
    runs_root: str = incidental()  # absolute: see harness.config.runs_root
    recipe_file: str = incidental("")  # provenance
    recipe_sha256: str = incidental("")


def _with_keyword_field(name: str, annotation: Any, default: Any) -> Any:
    """Adds a field whose name is a Python keyword (`from:` in a recipe row) before @dataclass runs: kept
    out of the generated __init__, __repr__ and __eq__, whose code could not name it. OmegaConf reads
    fields by name, so composition, validation and overrides treat it like any other."""

    def add(cls: type) -> type:
        cls.__annotations__[name] = annotation
        setattr(cls, name, dataclasses.field(default=default, init=False, repr=False, compare=False))
        return cls

    return add


@dataclass(eq=False)
@_with_keyword_field("from", Upstream | None, None)
class Row:
    """A table row as written in a recipe; unset fields inherit the recipe's top-level values, and its
    `model_kwargs` and `loss` say only what they change of the recipe's. `from: {recipe, row, checkpoint}`
    names the upstream run that a row whose engine consumes one (finetune, evaluate, ...) starts from."""

    id: str = MISSING
    label: str = MISSING
    group: str = ""  # sub-table, e.g. "1a"
    column: str = ""  # the paper's column when a table has several (e.g. "100 ep.")
    model: str | None = None
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)  # merged over the recipe's
    last_block: str = "standard"
    protocol: str | None = None  # an option of the `protocol` config group; default: the recipe's
    engine: str | None = None  # default: the recipe's
    dataset: str | None = None
    epochs: int | None = None
    loss: RowLoss = dataclasses.field(default_factory=RowLoss)  # what it sets, over the recipe's `loss`
    fraction: float | None = None
    paper: dict[str, float] = dataclasses.field(default_factory=dict)  # metric name -> value
    paper_points: dict[int, float] = dataclasses.field(default_factory=dict)  # Fig. 3: epoch -> top-1
    # the gain the paper prints beside this cell, per metric: the report checks it against paper - baseline
    paper_gain: dict[str, float] = dataclasses.field(default_factory=dict)
    paper_quoted_from: str | None = None  # the paper copied this row's numbers from another work
    note: str = ""  # what a reader must know beside this row's numbers (shown in the report)
    baseline: str | None = None  # id of the row this one improves on: the report shows the gain over it


@dataclass
class Local:
    """How `scale=local` shrinks a table: synthetic data, small models, fewer epochs (warm-ups shrink with
    them), CPU-sized batches trained at the protocol's base learning rate (no linear scaling down to them)."""

    # Tab. 1 with three seeds within the local target of 30 minutes on 2 cores (docs/local-scale.md)
    epochs_factor: float = 0.08
    min_epochs: int = 2
    # three seeds, so that the report can tell a gain from the spread of the seeds (Welch's t-test)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])
    batch_size: int = 64
    repeated_aug: bool = False
    # RandAugment, Mixup and CutMix: off at local scale, where a run of a few hundred steps underfits (its
    # training accuracy stays below its validation accuracy) and these regularisers, tuned against
    # overfitting in 300-epoch ImageNet runs, cost the local Tab. 1 baseline most of its top-1 (the measured
    # figures: docs/local-scale.md, "What moved the Tab. 1 baseline");
    # RandAugment's Invert and Solarize also turn the colours that name a synthetic class into another's.
    # True keeps the protocol's. Drop path, label smoothing and random erasing stay as the protocol says.
    strong_augment: bool = False
    # 240 validation images per class, 2,400 in all: the standard error of a top-1 near 60 % is 1.0 point
    # (sqrt(0.6 x 0.4 / 2400)), where 200 images gave 3.5 and one image was half a point
    synthetic: Synthetic = dataclasses.field(default_factory=lambda: Synthetic(val_per_class=240))
    # the epochs between validations; None: the final epoch only. One validation per run makes the local
    # top-1 the final model's, an unbiased estimate that a paired comparison can use, where the best of
    # several noisy validations is biased upwards (the paper's DeiT code prints that maximum); and it keeps
    # 2,400 validation images affordable. A recipe that plots a curve over the epochs (Fig. 3) sets 1.
    eval_every: int | None = None
    # the evaluation stand-ins' images per class (`eval.standin_per_class`), by the same rule where their
    # time allows: ImageNet-A's stand-in covers every other class, so 500 per class is 2,500 images (1.0
    # point at 50 %); VOC's stand-in gives a Jaccard per image, whose measured spread makes 40 per class
    # (400 images) about 0.8 point (docs/local-scale.md, "Validation size"); ImageNet-C's stand-in corrupts
    # each image 75 times (15 corruptions x 5 severities), so it keeps 20 per class (200 images, 15,000
    # corrupted images per evaluation); so does ADE20K's (the segmentation's val split, evaluated 10 times
    # in a local run, each image's mIoU counting its 4,096 pixels)
    # None: every stand-in as large as the synthetic val split (the local scale before 2,400 images)
    standin_per_class: dict[str, int] | None = dataclasses.field(
        default_factory=lambda: {"imagenet_a": 500, "voc2012": 40, "imagenet_c": 20, "ade20k": 20}
    )
    # a transfer target (Tab. 4) keeps its class count, on about this many synthetic images in all
    target_train_images: int = 1000
    target_val_images: int = 2400  # the rule of the validation split: 1.0 point at 60 %
    num_workers: int = 0
    cpus: int = 2  # what a local-scale job asks Slurm for: no GPU, a few CPUs, a little memory
    mem_gb: int = 6
    # self-supervised pre-training (Tab. 9) on a CPU: DINO's small crops (96 px of 224 -> 32 of 64, a
    # multiple of the local ViT's 8-px patches) and their number, and narrower heads (DINO's 65,536
    # prototypes and 2048-wide MLP, MoCo-v3's 4096-wide MLPs)
    local_crop_size: int = 32
    local_crops_number: int = 2
    # the pre-training blur radii (px, the same for every crop in both codes) times the synthetic image size
    # over the run's input size (64 / 224), so that a local crop is blurred as much, relative to its size,
    # as a paper-scale global crop; false keeps the protocol's radii
    scale_blur: bool = True
    head_out_dim: int = 1024
    head_hidden_dim: int = 512
    # iteration-based training (the segmentation engine, Tab. 12): iterations and their evaluation and
    # checkpoint intervals times this (40k -> 160); crops and resize scales shrink to the synthetic image
    # size, and the FPN's neck and head widths by fpn_width_factor, as the local PVT's last stage is a
    # quarter of PVT-Small's (128 of 512 channels)
    iterations_factor: float = 0.004
    fpn_width_factor: float = 0.25


@dataclass
class Recipe:
    """A table or figure of the paper. A recipe file starts with the defaults list
    `[recipe_schema, {protocol: NAME}, _self_]`: this schema, then the protocol of rows that name none."""

    name: str = MISSING
    title: str = MISSING
    reproduces: str = MISSING  # which table or figure of the paper, in words
    store: str | None = None  # run-store folder (default: name); a figure may reuse a table's runs
    scale: Scale = Scale.paper
    metrics: list[str] = dataclasses.field(default_factory=lambda: ["top1"])  # the table's metric columns
    engine: str = "supervised"
    model: str | None = None
    # what every row has unless it says otherwise: its model arguments (a row's are merged over these) and
    # its loss (a row's `loss` sets fields over these, and these over harness.config.schema.Loss's defaults)
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss: RowLoss = dataclasses.field(default_factory=RowLoss)
    protocol: ProtocolBase | None = None  # composed from the `protocol` group by the defaults list
    dataset: str | None = None
    data: Data = dataclasses.field(default_factory=lambda: Data(dataset=""))
    epochs: int | None = None
    seeds: list[int] | None = None  # None: the scale's default, [0] at paper scale, local.seeds at local
    rows: list[Row] = MISSING
    lambda_sweep: str | None = None  # a group whose rows differ by lambda only: plotted against lambda
    local: Local = dataclasses.field(default_factory=Local)
    train: Train = dataclasses.field(default_factory=Train)
    eval: Evaluation = dataclasses.field(default_factory=Evaluation)
    resources: Resources = dataclasses.field(default_factory=Resources)
    launcher: Launcher = dataclasses.field(default_factory=Launcher)
    runs_root: str | None = None  # the run store; default: $SAR_RUNS, else runs/ in the project


SCHEMAS: dict[str, type] = {
    s.__name__: s
    for s in (
        ProtocolBase,
        EvaluationProtocol,
        Protocol,
        ClassificationProtocol,
        SupervisedProtocol,
        ProbeProtocol,
        MoCoV3Protocol,
        DinoProtocol,
        SegmentationProtocol,
        Loss,
        RowLoss,
        Synthetic,
        Data,
        Resources,
        Launcher,
        Upstream,
        Evaluation,
        Train,
        Run,
        Row,
        Local,
        Recipe,
    )
}


def field_types(schema: type) -> dict[str, Any]:
    """The fields of a schema dataclass with their resolved types; a run's `protocol` is any registered
    engine's (harness.config.protocols.any_protocol), since which one depends on the run's engine."""
    types = _hints(schema)
    return {
        k: any_protocol() if t is ProtocolBase or t == ProtocolBase | None else t for k, t in types.items()
    }


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints[f.name] for f in dataclasses.fields(schema)}


def schema_of(annotation: Any) -> type | None:
    """The dataclass a field holds (through `X | None`), or None for a leaf."""
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def is_mapping(annotation: Any) -> bool:
    """A free-form `dict[...]` field: its keys are the user's (model_kwargs, paper.points)."""
    return typing.get_origin(annotation) is dict


def describe_type(annotation: Any) -> str:
    """What a value of this type looks like, in words, for error messages."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        text = " | ".join(member.value for member in annotation)
    elif origin is list:
        text = f"a list of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s, e.g. [0,1,2]"
    elif origin is dict:
        text = "a mapping, e.g. {key: value}"
    elif optional and len(args) == 1:
        return f"{describe_type(args[0])} or null"
    elif dataclasses.is_dataclass(annotation):
        text = f"a mapping of {annotation.__name__} keys"
    else:
        text = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}.get(
            annotation, getattr(annotation, "__name__", str(annotation))
        )
    return f"{text} or null" if optional else text
