"""GPU-hour (and, for CPU runs, CPU-hour) estimates for a dry run: MACs counted on the meta device (no
memory, no compute), times the images seen, at an assumed effective throughput per GPU or per CPU job. Each
engine's spec says how it spends them (`EngineSpec.cost`, with the helpers here). An estimate, labelled as
such everywhere."""

from functools import cache
from typing import TYPE_CHECKING

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from harness.config import hashable
from harness.core import anyvit
from harness.data import IMAGENET_C_CORRUPTIONS, IMAGENET_C_SEVERITIES, OFFICIAL_SIZES
from harness.eval import EVALUATIONS

if TYPE_CHECKING:
    from harness.recipe import ResolvedRun

TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward about twice the forward
EVAL_FLOPS_PER_MAC = 2
SPLITS = {"imagenet_c": len(IMAGENET_C_CORRUPTIONS) * len(IMAGENET_C_SEVERITIES)}  # splits of one dataset
YEAR_H = 24 * 365


@cache
def count_gmacs(model: str, kwargs: tuple, input_size: int) -> float:
    """Forward GMACs of one image, counted with FlopCounterMode on meta tensors."""
    options = dict(kwargs)
    if anyvit.is_timm_family(model):  # built at the size it runs at, as the harness builds it; no weights
        options = {"img_size": input_size, **options}
        options.pop(anyvit.PRETRAINED_FILE, None)
    with torch.device("meta"):
        net = timm.create_model(model, **options)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, input_size, input_size))
    return counter.get_total_flops() / 2e9


def train_images(cfg: DictConfig) -> float:
    """The images of one epoch of the run's training split."""
    d = cfg.data
    if d.dataset == "synthetic":
        return d.synthetic.num_classes * d.synthetic.train_per_class * d.fraction
    return OFFICIAL_SIZES[d.dataset, "train"] * d.fraction


def evaluated_images(cfg: DictConfig) -> float:
    """Images an evaluate run feeds the model: every split of every dataset its metrics need."""
    d = cfg.data
    total = 0.0
    for dataset in dict.fromkeys(EVALUATIONS[m] for m in cfg.eval.metrics):
        per_split = (
            d.synthetic.num_classes * d.synthetic.val_per_class
            if d.dataset == "synthetic"
            else OFFICIAL_SIZES[dataset, "val"]
        )
        total += per_split * SPLITS.get(dataset, 1)
    return total


def estimated_hours(run: "ResolvedRun") -> tuple[str, float]:
    """("GPU", GPU-hours) for a run on GPUs, ("CPU", hours of one CPU job) for a run on a CPU."""
    from harness.engines.spec import spec_of

    cfg = run.config
    kwargs = hashable(OmegaConf.to_container(cfg.model_kwargs))
    flops = spec_of(cfg.engine).cost(cfg, lambda size: count_gmacs(cfg.model, kwargs, size)) * 1e9
    if cfg.resources.gpus_per_node == 0:
        return "CPU", flops / (cfg.resources.assumed_cpu_gflops * 1e9) / 3600
    return "GPU", flops / (cfg.resources.assumed_tflops * 1e12) / 3600


def beyond_a_year(run: "ResolvedRun") -> str:
    """A warning for a run estimated to take more than a year on its own GPUs (or CPU job), as an
    `epochs=1000000000000` would, else ""."""
    from harness.engines.spec import Progress, spec_of

    kind, hours = estimated_hours(run)
    r = run.config.resources
    devices = max(1, r.nodes * r.gpus_per_node) if kind == "GPU" else 1
    years = hours / devices / YEAR_H
    if years <= 1:
        return ""
    spec = spec_of(run.config.engine)
    length = "its evaluations"
    if spec.trains:
        unit = "epochs" if spec.progress is Progress.epoch else "iterations"
        length = f"{spec.length(run.config):,} {unit}"
    return (
        f"estimated at {hours:,.0f} {kind}-hours, {years:,.0f} years on its {devices} {kind}(s), for "
        f"{length}: is that meant?"
    )
