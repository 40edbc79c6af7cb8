"""GPU-hour (and, for CPU runs, CPU-hour) estimates for a dry run: MACs counted on the meta device (no
memory, no compute), times the images seen, at an assumed effective throughput per GPU or per CPU job. An
estimate, labelled as such everywhere."""

from functools import cache

import timm
import torch
from omegaconf import OmegaConf
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from harness.recipe import ResolvedRun, hashable

TRAIN_IMAGES = {"imagenet1k": 1_281_167, "imagenet100": 126_689}  # training-set sizes
TRAIN_FLOPS_PER_MAC = 6  # forward 2 FLOPs per MAC, backward about twice the forward


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
    return TRAIN_IMAGES[d.dataset] * d.fraction


def estimated_hours(run: ResolvedRun) -> tuple[str, float]:
    """("GPU", GPU-hours) for a run on GPUs, ("CPU", hours of one CPU job) for a run on a CPU."""
    cfg = run.config
    kwargs = hashable(OmegaConf.to_container(cfg.model_kwargs))
    gmacs = count_gmacs(cfg.model, kwargs, cfg.data.input_size)
    flops = _train_images(run) * cfg.epochs * gmacs * 1e9 * TRAIN_FLOPS_PER_MAC
    if cfg.resources.gpus_per_node == 0:
        return "CPU", flops / (cfg.resources.assumed_cpu_gflops * 1e9) / 3600
    return "GPU", flops / (cfg.resources.assumed_tflops * 1e12) / 3600
