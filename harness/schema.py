"""The shape of a recipe and of one resolved run, as OmegaConf structured configs.

Merging a recipe's YAML into these dataclasses is what catches typos (unknown keys), wrong types and
missing values before anything is launched; `harness.recipe` adds the checks that need the registries.
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class Protocol:
    """A training protocol: the original recipe of an architecture (Appendix D; DeiT, T2T, PVT, CvT)."""

    name: str = MISSING
    description: str = ""
    batch_size: int = 1024  # total over all GPUs
    lr: float = 5e-4
    lr_batch_ref: int | None = 512  # lr scales with batch_size / lr_batch_ref; None: no scaling
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    warmup_epochs: int = 5
    weight_decay: float = 0.05
    opt_eps: float = 1e-8  # weight decay never applies to norms, biases and tokens (timm's optimizer factory)
    drop_path: float = 0.1
    smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    repeated_aug: bool = True
    clip_grad: float | None = None


@dataclass
class Loss:
    sar: bool = False  # add lambda * L_se (Eq. 9) to the main loss
    weight: float = 0.01  # lambda
    variant: str = "entropy"  # "entropy" (Eq. 9) or "tv" (Eq. 14, Appendix B)


@dataclass
class Synthetic:
    """The embedded synthetic dataset (harness.data.SyntheticConfig), used at local scale."""

    num_classes: int = 10
    image_size: int = 64
    train_per_class: int = 100
    val_per_class: int = 20
    seed: int = 0


@dataclass
class Data:
    dataset: str = MISSING
    stands_for: str | None = None  # at local scale: the paper's dataset that the synthetic one replaces
    root: str | None = None
    fraction: float = 1.0
    fraction_seed: int = 0
    input_size: int = 224
    num_workers: int = 8
    synthetic: Synthetic = field(default_factory=Synthetic)


@dataclass
class Resources:
    nodes: int = 1
    gpus_per_node: int = 8
    cpus_per_task: int = 10
    tasks_per_node: int | None = None  # DDP processes per node; default: one per GPU (one on a CPU)
    mem_gb: int = 64
    timeout_min: int = 4320
    assumed_tflops: float = 30.0  # effective throughput per GPU, for the GPU-hour estimate only


@dataclass
class Launcher:
    name: str = "auto"  # auto (slurm when sbatch is on the PATH, else local), slurm, local, inline
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    folder: str = "runs/_submitit"


@dataclass
class Paper:
    """The paper's numbers for a cell: what our run is compared with."""

    top1: float | None = None
    top5: float | None = None
    points: dict[int, float] = field(default_factory=dict)  # epoch -> top-1 quoted in the text (Fig. 3)


@dataclass
class Train:
    max_nonfinite_steps: int = 10  # consecutive non-finite losses before the run stops as failed
    eval_every: int = 1
    heartbeat_every_steps: int = 50  # how often a training worker says it is alive (`status`: running)
    progress: bool = True


@dataclass
class Run:
    """One fully resolved run: everything the worker needs, nothing else."""

    table: str = MISSING
    row: str = MISSING
    label: str = MISSING
    group: str = ""
    column: str = ""
    scale: str = "paper"
    model: str = MISSING
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    last_block: str = "standard"
    loss: Loss = field(default_factory=Loss)
    data: Data = field(default_factory=Data)
    protocol: Protocol = field(default_factory=Protocol)
    epochs: int = MISSING
    seed: int = 0
    paper: Paper = field(default_factory=Paper)
    train: Train = field(default_factory=Train)
    resources: Resources = field(default_factory=Resources)
    launcher: Launcher = field(default_factory=Launcher)
    runs_root: str = "runs"
    recipe_file: str = ""  # provenance
    recipe_sha256: str = ""


@dataclass
class Row:
    """A table row as written in a recipe; unset fields inherit the recipe's top-level values."""

    id: str = MISSING
    label: str = MISSING
    group: str = ""  # sub-table, e.g. "1a"
    column: str = ""  # the paper's column when a table has several (e.g. "100 ep.")
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    last_block: str = "standard"
    protocol: str | None = None
    dataset: str | None = None
    epochs: int | None = None
    loss: Loss = field(default_factory=Loss)
    fraction: float | None = None
    paper: Paper = field(default_factory=Paper)
    baseline: str | None = None  # id of the row this one improves on: the report shows the gain over it


@dataclass
class Local:
    """How `scale=local` shrinks a table: synthetic data, small models, fewer epochs, CPU-sized batches."""

    epochs_factor: float = 0.08  # Tab. 1 at local scale fits 20 minutes on 2 cores
    min_epochs: int = 2
    batch_size: int = 64
    repeated_aug: bool = False
    synthetic: Synthetic = field(default_factory=Synthetic)
    num_workers: int = 0


@dataclass
class Recipe:
    name: str = MISSING
    title: str = MISSING
    reproduces: str = MISSING  # which table or figure of the paper, in words
    store: str | None = None  # run-store folder (default: name); a figure may reuse a table's runs
    scale: str = "paper"
    model: str | None = None
    protocol: str = "deit"
    dataset: str | None = None
    data: Data = field(default_factory=lambda: Data(dataset=""))
    epochs: int | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    rows: list[Row] = MISSING
    lambda_sweep: str | None = None  # a group whose rows differ by lambda only: plotted against lambda
    local: Local = field(default_factory=Local)
    train: Train = field(default_factory=Train)
    resources: Resources = field(default_factory=Resources)
    launcher: Launcher = field(default_factory=Launcher)
    runs_root: str = "runs"
