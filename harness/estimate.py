"""GPU-hour (and, for CPU runs, CPU-hour) estimates for a dry run: MACs counted on the meta device (no
memory, no compute), times the images seen, at an assumed effective throughput per GPU or per CPU job. An
estimate, labelled as such everywhere."""

from functools import cache

import timm
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from harness.data import IMAGENET_C_CORRUPTIONS, IMAGENET_C_SEVERITIES, OFFICIAL_SIZES
from harness.eval import EVALUATIONS
from harness.recipe import ResolvedRun, hashable

TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward about twice the forward
EVAL_FLOPS_PER_MAC = 2
SPLITS = {"imagenet_c": len(IMAGENET_C_CORRUPTIONS) * len(IMAGENET_C_SEVERITIES)}  # splits of one dataset
YEAR_H = 24 * 365


@cache
def count_gmacs(model: str, kwargs: tuple, input_size: int) -> float:
    """Forward GMACs of one image, counted with FlopCounterMode on meta tensors."""
    with torch.device("meta"):
        net = timm.create_model(model, **dict(kwargs))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            net(torch.empty(1, 3, input_size, input_size))
    return counter.get_total_flops() / 2e9


def _train_images(run: ResolvedRun) -> float:
    d = run.config.data
    if d.dataset == "synthetic":
        return d.synthetic.num_classes * d.synthetic.train_per_class * d.fraction
    return OFFICIAL_SIZES[d.dataset, "train"] * d.fraction


def _evaluated_images(run: ResolvedRun) -> float:
    """Images an evaluate run feeds the model: every split of every dataset its metrics need."""
    d = run.config.data
    total = 0.0
    for dataset in dict.fromkeys(EVALUATIONS[m] for m in run.config.eval.metrics):
        per_split = (
            d.synthetic.num_classes * d.synthetic.val_per_class
            if d.dataset == "synthetic"
            else OFFICIAL_SIZES[dataset, "val"]
        )
        total += per_split * SPLITS.get(dataset, 1)
    return total


def estimated_hours(run: ResolvedRun) -> tuple[str, float]:
    """("GPU", GPU-hours) for a run on GPUs, ("CPU", hours of one CPU job) for a run on a CPU."""
    cfg = run.config
    kwargs = hashable(OmegaConf.to_container(cfg.model_kwargs))
    if cfg.engine == "evaluate":  # forward passes only, at the evaluation size where one is set
        gmacs = count_gmacs(cfg.model, kwargs, cfg.eval.input_size or cfg.data.input_size)
        flops = _evaluated_images(run) * gmacs * 1e9 * EVAL_FLOPS_PER_MAC
    else:
        flops = _train_gmacs(run, kwargs) * 1e9
    if cfg.resources.gpus_per_node == 0:
        return "CPU", flops / (cfg.resources.assumed_cpu_gflops * 1e9) / 3600
    return "GPU", flops / (cfg.resources.assumed_tflops * 1e12) / 3600


def _train_gmacs(run: ResolvedRun, kwargs: tuple) -> float:
    """FLOPs (in G) of a training run, as each engine spends them: multi-crop and teacher forwards for DINO,
    two views through the base and the momentum encoder for MoCo-v3, forward passes only for a linear probe
    (its classifier is negligible), and iterations of crops for segmentation (the backbone only: the FPN is
    not counted)."""
    cfg, p = run.config, run.config.protocol
    gmacs = count_gmacs(cfg.model, kwargs, cfg.data.input_size)
    if cfg.engine == "segmentation":
        crop = count_gmacs(cfg.model, kwargs, p.segmentation.crop_size)
        return p.segmentation.iterations * p.batch_size * crop * TRAIN_FLOPS_PER_MAC
    images = _train_images(run) * cfg.epochs
    if cfg.engine == "dino":
        small = count_gmacs(cfg.model, kwargs, p.dino.local_crop_size)
        student = 2 * gmacs + p.dino.local_crops_number * small
        return images * (student * TRAIN_FLOPS_PER_MAC + 2 * gmacs * EVAL_FLOPS_PER_MAC)
    if cfg.engine == "mocov3":
        return images * 2 * gmacs * (TRAIN_FLOPS_PER_MAC + EVAL_FLOPS_PER_MAC)
    if cfg.engine == "linear_probe":
        return images * gmacs * EVAL_FLOPS_PER_MAC
    return images * gmacs * TRAIN_FLOPS_PER_MAC


def beyond_a_year(run: ResolvedRun) -> str:
    """A warning for a run estimated to take more than a year on its own GPUs (or CPU job), as an
    `epochs=1000000000000` would, else ""."""
    kind, hours = estimated_hours(run)
    r = run.config.resources
    devices = max(1, r.nodes * r.gpus_per_node) if kind == "GPU" else 1
    years = hours / devices / YEAR_H
    if years <= 1:
        return ""
    c = run.config
    length = f"{c.epochs:,} epochs"
    if c.engine in ("evaluate", "segmentation"):
        length = (
            "its evaluations"
            if c.engine == "evaluate"
            else f"{c.protocol.segmentation.iterations:,} iterations"
        )
    return (
        f"estimated at {hours:,.0f} {kind}-hours, {years:,.0f} years on its {devices} {kind}(s), for "
        f"{length}: is that meant?"
    )
