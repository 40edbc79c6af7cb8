"""`python -m benchmarks gpu`: every figure the project needs from a GPU, in one run sized for 4 min (H100).

1. correctness: the Triton labeler and fused loss (through `sar`'s CUDA dispatch) against the Numba ones on
   random maps of several sizes, plateaus, flat and non-finite maps included; mismatches are counted.
2. loss: `sar.spatial_entropy` forward + backward on [256, 6, 14, 14] (CUDA events, eager and in a CUDA
   graph), the host syncs it makes, and the reference approach (benchmarks/reference_loss.py).
3. train_step: a ViT-S/16 step at batch 256 under bf16 autocast through the harness's own step: plain ViT
   (CE only), the engine's baseline row (CE, L_se of S.detach() logged) and SAR (CE + 0.01 L_se).
4. host_sync: the SAR step as the new core runs it (host reads every `log_every` steps) against the
   previous engine's per-step syncs (`.item()` on the finiteness flag, its all-reduce, loss, ce and aux).
5. attach: `sar.attach`'s cost per timm family (ViT, distilled DeiT, DeiT-III, registers, EVA-02, RoPE-ViT,
   BEiT): the training step at batch 64 in bf16 with and without SAR, and the memory S adds.

Results go to `--out` as JSON after every section (a run cut short keeps what it measured). Exit 0 when all
is well, 1 on any mismatch or failed section, 3 without CUDA. `TRITON_INTERPRET=1 ... --cpu-smoke` runs
every section on the CPU at tiny sizes (the Triton kernels interpreted), so CI exercises it without a GPU.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numba
import timm
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.optim import Optimizer

import sar
from benchmarks.reference_loss import reference_spatial_entropy
from benchmarks.timing import cuda_graph_seconds, cuda_median_seconds, median_seconds
from harness.core.model import build_model, for_training
from harness.core.precision import Precision
from harness.core.steps import StepTotals, adamw, optimizer_step
from harness.distributed import World

EXIT_FAILED = 1
EXIT_NO_GPU = 3
EPS = 1e-9  # sar.spatial_entropy's default
LAMBDA = 0.01
GOAL_LOSS_MS = 0.2
GOAL_OVERHEAD_PCT = 3.0
SIZES = ((7, 7), (14, 14), (16, 16), (30, 30), (12, 20), (64, 64))  # 64x64: the largest both kernels take
# a cell at least GAP x (the map's std) off its map's mean: see _away_from_mean
GAP = 1e-2
U32 = 2.0**-24  # float32's unit roundoff: see _tolerances
DEIT = {"lr": 5e-4, "lr_batch_ref": 512, "weight_decay": 0.05, "opt_eps": 1e-8, "drop_path": 0.1}


@dataclass(frozen=True)
class Plan:
    """Sizes and repeats of one run. Every section records its seconds in the JSON, to size the next run."""

    maps: int = 10_000  # spread evenly over SIZES x MAP_KINDS
    loss_shape: tuple[int, int, int, int] = (256, 6, 14, 14)
    loss_repeats: int = 200
    reference_repeats: int = 10
    model: str = "sar_vit_small_patch16_224"
    model_kwargs: dict = field(default_factory=dict)
    image_size: int = 224
    classes: int = 1000
    batch: int = 256
    log_every: int = 50  # the engine's default: one timed block is this many steps and one host read
    blocks: int = 3  # timed blocks per variant, round-robin; the median is reported
    warmup_steps: int = 10


FULL = Plan()
QUICK = replace(
    FULL, maps=2_000, loss_repeats=50, reference_repeats=3, log_every=20, blocks=2, warmup_steps=5
)
SMOKE = Plan(
    maps=60,
    loss_shape=(8, 6, 14, 14),
    loss_repeats=5,
    reference_repeats=2,
    model_kwargs={"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 48, "num_heads": 3},
    image_size=32,
    classes=10,
    batch=4,
    log_every=3,
    blocks=2,
    warmup_steps=1,
)


# ---------------------------------------------------------------------------------------------------------
# 1. correctness


def _away_from_mean(s: torch.Tensor, gap: float) -> torch.Tensor:
    """Moves the cells above each map's mean up and the others down, keeping the mean, so that none lies
    within float32 rounding of it: such a cell falls on either side depending on the summation order
    (float32 on the GPU, float64 in Numba), a difference of arithmetic, not of the kernels. Ties stay ties;
    maps holding NaN or inf stay as they are."""
    m = s.mean(dim=(-2, -1), keepdim=True)
    fg = s > m
    n_fg = fg.sum(dim=(-2, -1), keepdim=True)
    n_bg = s[0].numel() - n_fg
    up = gap * s.std(dim=(-2, -1), keepdim=True)
    moved = torch.where(fg, s + up, s - up * n_fg / n_bg.clamp(min=1))
    return torch.where(s.isfinite().all(dim=(-2, -1), keepdim=True), moved, s)


def _serpentine(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A snake through every other row, broken and bridged at random: components with long paths."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    snake = (y % 4 == 1) | ((y % 4 == 0) & (x == w - 1)) | ((y % 4 == 2) & (x == 0))
    return snake.float() + 0.3 * torch.randn(n, h, w, generator=gen)


def _nonfinite(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Every other map holds one NaN, +inf or -inf cell: H is NaN there and dH/dS zero."""
    s = torch.randn(n, h * w, generator=gen)
    bad = torch.arange(0, n, 2)
    cells = torch.randint(0, h * w, (len(bad),), generator=gen)
    kinds = torch.randint(0, 3, (len(bad),), generator=gen)
    s[bad, cells] = torch.tensor([math.nan, math.inf, -math.inf])[kinds]
    return s.reshape(n, h, w)


def _smooth(n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Low-frequency noise: few, large blobs."""
    x = torch.randn(n, 1, h, w, generator=gen)
    for _ in range(2):
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return x[:, 0]


MAP_KINDS: dict[str, Callable[[int, int, int, torch.Generator], torch.Tensor]] = {
    "gauss": lambda n, h, w, g: torch.randn(n, h, w, generator=g),
    "smooth": _smooth,
    # 1 to 4 integer levels per map: ties, plateaus, cells equal to the mean, flat maps (one level)
    "plateau": lambda n, h, w, g: (
        torch.rand(n, h, w, generator=g) * torch.randint(1, 5, (n, 1, 1), generator=g)
    ).floor(),
    # 70 % foreground: large components joined through diagonals, holes
    "dense": lambda n, h, w, g: (torch.rand(n, h, w, generator=g) < 0.7).float(),
    "serpentine": _serpentine,
    "nonfinite": _nonfinite,
}


LabelFn = Callable[[torch.Tensor], torch.Tensor]  # bool [N, h, w] -> int32 labels, on the CPU
EntropyFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # maps -> (H [N], dH/dS), on the CPU


def canonical_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels `[N, h, w]` renamed 1 + the smallest linear index of each component's pixels (0 stays 0):
    two labelings of the same partition become equal whatever numbers they used."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    hw = flat.shape[1]
    values, inverse = torch.unique(flat, return_inverse=True)
    key = (torch.arange(n)[:, None] * len(values) + inverse).flatten()
    index = torch.arange(hw).repeat(n)
    first = torch.full((n * len(values),), hw).scatter_reduce(0, key, index, "amin")
    return torch.where(flat == 0, 0, first[key].reshape(n, hw) + 1).reshape(labels.shape)


def _public_entropy(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map H and dH/dS through `sar.spatial_entropy` and autograd, on the maps' device (the dispatch
    training runs: Numba on the CPU, Triton on CUDA)."""
    S = maps[:, None].clone().requires_grad_(True)
    H = sar.spatial_entropy(S, reduction="none")
    H.sum().backward()
    return H.detach()[:, 0].cpu(), S.grad[:, 0].cpu()


def _interpreted_entropy(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton entropy kernel called directly on CPU tensors (TRITON_INTERPRET=1): on the CPU the
    dispatch would send them to Numba."""
    from sar.kernels.triton_gpu import entropy_triton

    n, h, w = maps.shape
    value, grad = entropy_triton(maps.reshape(n, h * w), h, w, EPS, True)
    return value, grad.reshape(n, h, w)


def _interpreted_labels(mask: torch.Tensor) -> torch.Tensor:
    """The Triton labeling kernel called directly on a CPU tensor (TRITON_INTERPRET=1)."""
    from sar.kernels.triton_gpu import label_triton

    return label_triton(mask)


def _cuda_labels(mask: torch.Tensor) -> torch.Tensor:
    return sar.connected_components(mask.cuda()).cpu()


def _cuda_entropy(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _public_entropy(maps.cuda())


def _gpu_ops(device: torch.device) -> tuple[LabelFn, EntropyFn]:
    """(labeler, entropy) under test: `sar`'s public ops on CUDA, the Triton kernels interpreted on CPUs."""
    if device.type == "cuda":
        return _cuda_labels, _cuda_entropy
    return _interpreted_labels, _interpreted_entropy


def _tolerances(maps: torch.Tensor, h: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per map, the worst-case float32 error of the GPU kernel on H and on dH/dS (Numba sums in float64).

    The kernel sums a map's n cells in float32 (the masses by atomics, T by a tree), so each mass and T carry
    a relative error of up to n u; P_j = mass_j / T then errs by about 2 n u, H = -sum P log P by
    2 n u (1 + H), and dH/dB = (-(log P_j + 1) - H + sum P) / T by n u ((4 + H) / T + |dH/dB|)."""
    n = maps[0].numel()
    x = maps.double().flatten(1)
    total = (x - x.mean(dim=1, keepdim=True)).clamp(min=0).sum(dim=1) + n * EPS
    rel = n * U32  # NaN for maps holding NaN or inf: those must match exactly
    value_tol = 2 * rel * (1 + h.abs())
    grad_tol = rel * ((4 + h.abs()) / total + grad.flatten(1).abs().amax(dim=1))
    return value_tol, grad_tol


def _compare_case(maps: torch.Tensor, device: torch.device) -> dict:
    """Mismatch counts of one stack of maps: GPU path against Numba."""
    label_gpu, entropy_gpu = _gpu_ops(device)
    mask = maps > maps.mean(dim=(-2, -1), keepdim=True)
    ref_labels, gpu_labels = sar.connected_components(mask), label_gpu(mask)
    label_diff = (canonical_labels(ref_labels) != canonical_labels(gpu_labels)).flatten(1).any(1)
    raw_diff = (ref_labels != gpu_labels).flatten(1).any(1)
    ref_h, ref_g = _public_entropy(maps)
    gpu_h, gpu_g = entropy_gpu(maps)
    value_tol, grad_tol = _tolerances(maps, ref_h, ref_g)
    value_err = (gpu_h - ref_h).abs().double()
    grad_err = (gpu_g - ref_g).flatten(1).abs().amax(dim=1).double()
    value_ok = (value_err <= value_tol) | (gpu_h.isnan() & ref_h.isnan())
    grad_ok = (grad_err <= grad_tol) | (grad_err == 0)
    finite = maps.flatten(1).isfinite().all(dim=1)
    return {
        "maps": len(maps),
        "label_mismatches": int(label_diff.sum()),
        "labels_renumbered": int((raw_diff & ~label_diff).sum()),
        "value_mismatches": int((~value_ok).sum()),
        "grad_mismatches": int((~grad_ok).sum()),
        "max_value_diff": float(value_err[finite].max()),
        "worst_value_diff_to_tolerance": float((value_err / value_tol)[finite].max()),
        "worst_grad_diff_to_tolerance": float((grad_err / grad_tol)[finite].max()),
    }


WORST = ("max_value_diff", "worst_value_diff_to_tolerance", "worst_grad_diff_to_tolerance")


def correctness(plan: Plan, device: torch.device) -> dict:
    """Labels (up to renumbering), per-map entropies and their gradients, GPU path against Numba."""
    gen = torch.Generator().manual_seed(0)
    per_case = math.ceil(plan.maps / (len(SIZES) * len(MAP_KINDS)))
    cases = []
    for h, w in SIZES:
        for kind, make in MAP_KINDS.items():
            maps = _away_from_mean(make(per_case, h, w, gen).float(), GAP)
            cases.append({"case": f"{h}x{w} {kind}", **_compare_case(maps, device)})
    totals = {
        key: sum(c[key] for c in cases)
        for key in ("maps", "label_mismatches", "labels_renumbered", "value_mismatches", "grad_mismatches")
    }
    result = {
        "path": "sar's public ops on cuda" if device.type == "cuda" else "triton kernels, interpreted",
        **totals,
        **{key: max(c[key] for c in cases) for key in WORST},
        "cases": cases,
    }
    print(f"\n1. correctness ({result['path']}), {totals['maps']} maps against Numba")
    for c in cases:
        print(
            f"  {c['case']:>16} {c['maps']:5d} maps | mismatches labels {c['label_mismatches']}"
            f" H {c['value_mismatches']} dH/dS {c['grad_mismatches']} | max |dH| {c['max_value_diff']:.0e}"
            f" | worst diff/tol H {c['worst_value_diff_to_tolerance']:.2f}"
            f" dH/dS {c['worst_grad_diff_to_tolerance']:.2f}"
        )
    print(
        f"  total mismatches: labels {totals['label_mismatches']}, values {totals['value_mismatches']},"
        f" grads {totals['grad_mismatches']} (must be 0); maps labelled alike but numbered differently:"
        f" {totals['labels_renumbered']}"
    )
    return result


# ---------------------------------------------------------------------------------------------------------
# 2. loss


def count_syncs(fn: Callable[[], object], device: torch.device) -> int | None:
    """How many synchronising CUDA calls `fn` makes (torch's sync debug mode); None off CUDA."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    return sum("synchroniz" in str(w.message) for w in caught)


def _device_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median time of `fn`: CUDA events on the GPU, wall clock on the CPU."""
    if device.type == "cuda":
        return cuda_median_seconds(fn, repeats=repeats)
    return median_seconds(fn, repeats=repeats)


def _fwd_bwd(loss_fn: Callable[[torch.Tensor], torch.Tensor], S: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        S.grad = None
        loss_fn(S).backward()

    return step


def loss(plan: Plan, device: torch.device) -> dict:
    """`sar.spatial_entropy` forward + backward against the reference approach, same maps, same run."""
    S = torch.randn(*plan.loss_shape, generator=torch.Generator().manual_seed(0)).to(device)
    S.requires_grad_(True)
    ours_value = sar.spatial_entropy(S.detach()).item()
    ref_value = reference_spatial_entropy(S.detach()).item()
    step = _fwd_bwd(sar.spatial_entropy, S)
    eager = _device_seconds(step, plan.loss_repeats, device)
    syncs = count_syncs(step, device)
    ref = median_seconds(_fwd_bwd(reference_spatial_entropy, S), repeats=plan.reference_repeats, warmup=1)
    graph, graph_error = None, None
    if device.type == "cuda":  # last: a capture that fails is reported, and leaves no figure half-measured
        try:
            graph = cuda_graph_seconds(lambda: sar.spatial_entropy(S).backward(), plan.loss_repeats)
        except RuntimeError as error:
            graph_error = f"{type(error).__name__}: {error}"
    result = {
        "shape": list(plan.loss_shape),
        "sar_fwd_bwd_ms": eager * 1e3,
        "sar_fwd_bwd_cuda_graph_ms": None if graph is None else graph * 1e3,
        "cuda_graph_error": graph_error,
        "reference_fwd_bwd_ms": ref * 1e3,
        "speedup_vs_reference": ref / eager,
        "syncs_in_fwd_bwd": syncs,
        "loss": ours_value,
        "loss_rel_diff_vs_reference": abs(ours_value - ref_value) / max(abs(ref_value), 1e-12),
        "goal_ms": GOAL_LOSS_MS,
        "goal_met": eager * 1e3 < GOAL_LOSS_MS if device.type == "cuda" else None,
    }
    graph_text = f"{graph * 1e3:.3f} ms" if graph is not None else f"none ({graph_error or 'no GPU'})"
    print(f"\n2. spatial entropy forward + backward, {'x'.join(map(str, plan.loss_shape))}")
    print(
        f"  sar {result['sar_fwd_bwd_ms']:.3f} ms eager, in a CUDA graph {graph_text}"
        f" | reference {result['reference_fwd_bwd_ms']:.2f} ms ({result['speedup_vs_reference']:.1f}x)"
        f" | host syncs {result['syncs_in_fwd_bwd']}"
        f" | goal < {GOAL_LOSS_MS} ms: {_verdict(result['goal_met'])}"
    )
    return result


# ---------------------------------------------------------------------------------------------------------
# 3 and 4. training steps


Losses = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (loss, ce, aux), on the device


@dataclass
class Loop:
    """One way of training: `step()` runs one step with its own per-step syncs, `read()` the periodic host
    read that comes every `log_every` steps (the new core), or nothing (the previous engine)."""

    step: Callable[[], None]
    read: Callable[[], None]


class Bench:
    """The model-independent parts of a training step: data, precision, the engine's protocol."""

    def __init__(self, plan: Plan, device: torch.device) -> None:
        self.plan, self.device = plan, device
        gen = torch.Generator().manual_seed(0)
        size = plan.image_size
        self.images = torch.randn(plan.batch, 3, size, size, generator=gen).to(device)
        self.targets = torch.randint(0, plan.classes, (plan.batch,), generator=gen).to(device)
        self.precision = Precision("bf16", device)
        self.protocol = OmegaConf.create({**DEIT, "batch_size": plan.batch})
        self.world = World()

    def model(self, last_block: str) -> tuple[nn.Module, Optimizer]:
        """(the model wrapped for its SAR forward as the engine wraps it, the engine's AdamW), same init."""
        torch.manual_seed(0)
        cfg = OmegaConf.create(
            {
                "model": self.plan.model,
                "last_block": last_block,
                "protocol": self.protocol,
                "model_kwargs": dict(self.plan.model_kwargs),
                "loss": {"drloc_weight": 0.0, "drloc_pairs": 64, "similarity": "dot"},
            }
        )
        model = build_model(cfg, self.plan.classes, self.device).train()
        training, net = for_training(model, cfg, self.world)
        return net, adamw(training, self.protocol)

    def losses(self, net: nn.Module, sar_loss: bool) -> Losses:
        """(loss, ce, aux) as `train_one_epoch` computes them."""
        with self.precision.autocast():
            logits, S, _ = net(self.images)
        ce = F.cross_entropy(logits.float(), self.targets)
        aux = sar.spatial_entropy(S if sar_loss else S.detach())
        return (ce + LAMBDA * aux if sar_loss else ce), ce, aux

    def plain_losses(self, net: nn.Module) -> Losses:
        """The model's own forward, no S at all: CE only, aux 0."""
        with self.precision.autocast():
            logits = net.model(self.images)
        ce = F.cross_entropy(logits.float(), self.targets)
        return ce, ce, torch.zeros((), device=self.device)

    def new_core(self, net: nn.Module, optimizer: Optimizer, losses: Callable[[], Losses]) -> Loop:
        """The harness's step: sums on the device, the step skipped on the device, a host read per window."""
        totals = StepTotals(self.device, max_nonfinite=10, state={})

        def step() -> None:
            loss, ce, aux = losses()
            skipped = optimizer_step(loss, optimizer, net, self.precision, clip=None)
            totals.add(loss, ce, aux, torch.zeros_like(ce), skipped)

        return Loop(step, lambda: totals.read(self.world, "bench"))

    def previous_engine(self, net: nn.Module, optimizer: Optimizer, losses: Callable[[], Losses]) -> Loop:
        """The same step with the previous engine's syncs: the finiteness flag read and all-reduced before
        backward (the host decided whether to step), then loss, ce and aux read after it."""

        def step() -> None:
            loss, ce, aux = losses()
            bad = float(not torch.isfinite(loss).item())
            flag = torch.tensor([bad], dtype=torch.float64, device=self.device)
            dist.all_reduce(flag)  # distributed.all_sum's body, as with several processes
            if flag.tolist()[0] == 0:
                optimizer_step(loss, optimizer, net, self.precision, clip=None)
            for value in (loss, ce, aux):
                value.item()

        return Loop(step, lambda: None)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_loops(loops: dict[str, Loop], plan: Plan, device: torch.device) -> dict[str, dict]:
    """Per variant: seconds per step over blocks of `log_every` consecutive steps and one read (the host
    syncs only where the variant does), blocks timed round-robin so drifts hit all alike; the median block.
    Also the host syncs of one step and of one read, counted after the warm-up."""
    for loop in loops.values():
        for _ in range(plan.warmup_steps):
            loop.step()
        loop.read()
    syncs = {name: (count_syncs(lp.step, device), count_syncs(lp.read, device)) for name, lp in loops.items()}
    times: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(plan.blocks):
        for name, loop in loops.items():
            _synchronize(device)
            start = time.perf_counter()
            for _ in range(plan.log_every):
                loop.step()
            loop.read()
            _synchronize(device)
            times[name].append((time.perf_counter() - start) / plan.log_every)
    return {
        name: {
            "ms_per_step": statistics.median(ts) * 1e3,
            "images_per_s": plan.batch / statistics.median(ts),
            "ms_per_step_blocks": [t * 1e3 for t in ts],
            "syncs_per_step": syncs[name][0],
            "syncs_per_read": syncs[name][1],
        }
        for name, ts in times.items()
    }


def _model_line(bench: Bench) -> dict:
    plan, dtype = bench.plan, bench.precision.dtype or torch.float32
    return {
        "model": plan.model,
        "batch": plan.batch,
        "image_size": plan.image_size,
        "dtype": str(dtype).removeprefix("torch."),
        "steps_per_block": plan.log_every,
        "blocks": plan.blocks,
    }


def _pct(slow: float, fast: float) -> float:
    return 100 * (slow / fast - 1)


def train_step(plan: Plan, device: torch.device) -> dict:
    """Step time without SAR and with it, through the harness's step; SAR's overhead against both."""
    bench = Bench(plan, device)
    vit_net, vit_opt = bench.model("standard")
    base_net, base_opt = bench.model("standard")
    sar_net, sar_opt = bench.model("sar")
    loops = {
        "vit": bench.new_core(vit_net, vit_opt, lambda: bench.plain_losses(vit_net)),
        "engine_baseline": bench.new_core(base_net, base_opt, lambda: bench.losses(base_net, sar_loss=False)),
        "sar": bench.new_core(sar_net, sar_opt, lambda: bench.losses(sar_net, sar_loss=True)),
    }
    variants = time_loops(loops, plan, device)
    vit, sar_ms = variants["vit"]["ms_per_step"], variants["sar"]["ms_per_step"]
    result = {
        **_model_line(bench),
        "variants": variants,
        "sar_overhead_pct": _pct(sar_ms, vit),
        "sar_overhead_vs_engine_baseline_pct": _pct(sar_ms, variants["engine_baseline"]["ms_per_step"]),
        "engine_baseline_overhead_pct": _pct(variants["engine_baseline"]["ms_per_step"], vit),
        "goal_overhead_pct": GOAL_OVERHEAD_PCT,
        "goal_met": _goal_met(_pct(sar_ms, vit), device),
    }
    print(
        f"\n3. training step, {plan.model} batch {plan.batch} {result['dtype']}"
        f" (the harness's step, host reads every {plan.log_every} steps)"
    )
    _print_variants(variants)
    print(
        f"  SAR overhead: {result['sar_overhead_pct']:+.1f}% vs ViT,"
        f" {result['sar_overhead_vs_engine_baseline_pct']:+.1f}% vs the engine's baseline"
        f" (which logs L_se: {result['engine_baseline_overhead_pct']:+.1f}% vs ViT)"
        f" | goal <= {GOAL_OVERHEAD_PCT}%: {_verdict(result['goal_met'])}"
    )
    return result


def _goal_met(overhead_pct: float, device: torch.device) -> bool | None:
    """The goal is the GPU's: off it there is no verdict."""
    return overhead_pct <= GOAL_OVERHEAD_PCT if device.type == "cuda" else None


@contextmanager
def one_rank_group(device: torch.device) -> Iterator[None]:
    """A process group of one rank (NCCL on CUDA, gloo on the CPU), so that the previous engine's
    all-reduce runs as it did under DDP."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def host_sync(plan: Plan, device: torch.device) -> dict:
    """The SAR step with no per-step sync (the new core) against the previous engine's per-step syncs."""
    bench = Bench(plan, device)
    new_net, new_opt = bench.model("sar")
    old_net, old_opt = bench.model("sar")
    loops = {
        "new_core": bench.new_core(new_net, new_opt, lambda: bench.losses(new_net, sar_loss=True)),
        "previous_engine": bench.previous_engine(
            old_net, old_opt, lambda: bench.losses(old_net, sar_loss=True)
        ),
    }
    with one_rank_group(device):
        variants = time_loops(loops, plan, device)
    new, old = variants["new_core"]["ms_per_step"], variants["previous_engine"]["ms_per_step"]
    result = {
        **_model_line(bench),
        "variants": variants,
        "previous_over_new_pct": _pct(old, new),
    }
    print(f"\n4. host synchronisation, SAR step, batch {plan.batch}")
    _print_variants(variants)
    print(f"  the previous engine's per-step syncs cost {result['previous_over_new_pct']:+.1f}% per step")
    return result


def _print_variants(variants: dict[str, dict]) -> None:
    for name, v in variants.items():
        print(
            f"  {name:>16}: {v['ms_per_step']:8.2f} ms/step {v['images_per_s']:8.0f} img/s"
            f" | host syncs per step {v['syncs_per_step']}, per read {v['syncs_per_read']}"
        )


# ---------------------------------------------------------------------------------------------------------
# the run


def attach(plan: Plan, device: torch.device) -> dict:
    """`benchmarks attach`'s rows on this device, bf16 on a GPU: each timm family's training step with and
    without SAR attached, and the memory S and its backward add (the CPU smoke run: ViT-S alone, batch 2)."""
    from benchmarks import bench_attach

    on_gpu = device.type == "cuda"
    families = list(bench_attach.MEMBERS) if on_gpu else ["ViT-S/16"]
    batch, repeats = (plan.batch // 4, 10) if on_gpu else (2, 1)
    dtype = torch.bfloat16 if on_gpu else None
    rows = [bench_attach.bench(family, batch, repeats, device, dtype) for family in families]
    bench_attach.report(rows)
    return {"rows": rows}


SECTIONS: dict[str, Callable[[Plan, torch.device], dict]] = {
    "correctness": correctness,
    "loss": loss,
    "train_step": train_step,
    "host_sync": host_sync,
    "attach": attach,
}


def _verdict(met: bool | None) -> str:
    return "n/a off the GPU" if met is None else ("met" if met else "MISSED")


def failures(name: str, result: dict) -> list[str]:
    """What makes the run fail: an error, a mismatch, a timed loss that is not the reference's."""
    if "error" in result:
        return [f"{name}: {result['error']}"]
    found = [
        f"{name}: {result[key]} {key.replace('_', ' ')}"
        for key in ("label_mismatches", "value_mismatches", "grad_mismatches")
        if result.get(key)
    ]
    if result.get("loss_rel_diff_vs_reference", 0) > 1e-3:
        found.append(f"{name}: the loss is {result['loss_rel_diff_vs_reference']:.1e} off the reference's")
    return found


def environment(device: torch.device, cpu_smoke: bool) -> dict:
    import triton

    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "capability": list(torch.cuda.get_device_capability(device)) if cuda else None,
        "cpu_smoke": cpu_smoke,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "numba": numba.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba.get_num_threads(),
    }


def _write(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)


def run(plan: Plan, device: torch.device, names: list[str], out: Path, cpu_smoke: bool) -> list[str]:
    """Every section in turn, the JSON rewritten after each; returns the failures."""
    env = environment(device, cpu_smoke)
    print(f"gpu benchmark on {env['device']}: torch {env['torch']} triton {env['triton']} cuda {env['cuda']}")
    payload: dict = {"machine": env, "plan": asdict(plan), "results": {}, "failures": []}
    for name in names:
        print(f"\n[{name}]", flush=True)
        start = time.perf_counter()
        try:
            result = SECTIONS[name](plan, device)
        except Exception as error:  # the other sections still run: the device time is scarce
            traceback.print_exc()
            result = {"error": f"{type(error).__name__}: {error}"}
        result["seconds"] = time.perf_counter() - start
        payload["results"][name] = result
        payload["failures"] += failures(name, result)
        _write(out, payload)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summary(payload["results"])
    print(f"wrote {out}")
    for failure in payload["failures"]:
        print(f"FAILED {failure}")
    return payload["failures"]


def summary(results: dict[str, dict]) -> None:
    """The headline figures of the sections that ran, against their goals."""
    print("\nsummary")
    if "maps" in results.get("correctness", {}):
        c = results["correctness"]
        mismatches = c["label_mismatches"] + c["value_mismatches"] + c["grad_mismatches"]
        print(f"  correctness: {mismatches} mismatches in {c['maps']} maps (must be 0)")
    if "sar_fwd_bwd_ms" in results.get("loss", {}):
        r = results["loss"]
        print(
            f"  loss fwd+bwd {'x'.join(map(str, r['shape']))}: {r['sar_fwd_bwd_ms']:.3f} ms"
            f" (goal < {GOAL_LOSS_MS} ms: {_verdict(r['goal_met'])}), {r['speedup_vs_reference']:.1f}x the"
            f" reference, {r['syncs_in_fwd_bwd']} host syncs"
        )
    if "variants" in results.get("train_step", {}):
        r = results["train_step"]
        print(
            f"  SAR step overhead: {r['sar_overhead_pct']:+.1f}% (goal <= {GOAL_OVERHEAD_PCT}%:"
            f" {_verdict(r['goal_met'])})"
        )
    for row in results.get("attach", {}).get("rows", []):
        ratio, kib = row["sar_time_ratio"], row["S_bytes"] / 1024
        print(f"  sar.attach {row['family']}: step x{ratio:.3f}, S {kib:.0f} KiB")
    if "variants" in results.get("host_sync", {}):
        r = results["host_sync"]["variants"]
        print(
            f"  host syncs: new core {r['new_core']['ms_per_step']:.2f} ms/step, previous engine"
            f" {r['previous_engine']['ms_per_step']:.2f} ms/step"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every section on the CPU, tiny sizes (CI)")
    parser.add_argument("--quick", action="store_true", help="fewer maps, repeats and steps")
    parser.add_argument("--out", type=Path, default=Path("bench-results/gpu.json"), help="the JSON file")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), default=list(SECTIONS), help="sections")
    parser.add_argument("--maps", type=int, help=f"random maps compared (default {FULL.maps})")
    parser.add_argument("--batch", type=int, help=f"training batch (default {FULL.batch})")
    parser.add_argument(
        "--log-every", type=int, help=f"steps per timed block, one host read (default {FULL.log_every})"
    )
    parser.add_argument("--blocks", type=int, help=f"timed blocks per variant (default {FULL.blocks})")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        if os.environ.get("TRITON_INTERPRET") != "1":  # Triton reads it once, when imported (timm imports it)
            parser.error(
                "--cpu-smoke interprets the Triton kernels: TRITON_INTERPRET=1 python -m benchmarks gpu ..."
            )
        plan, device = SMOKE, torch.device("cpu")
        torch.set_num_threads(1)  # at tiny sizes two threads only wait for each other on a busy CPU
        numba.set_num_threads(1)
    elif torch.cuda.is_available():
        plan, device = (QUICK if args.quick else FULL), torch.device("cuda")
    else:
        print(
            "python -m benchmarks gpu needs a CUDA GPU (none is visible); --cpu-smoke runs it on the CPU at"
            " tiny sizes",
            file=sys.stderr,
        )
        return EXIT_NO_GPU
    overrides = {"maps": args.maps, "batch": args.batch, "log_every": args.log_every, "blocks": args.blocks}
    plan = replace(plan, **{key: value for key, value in overrides.items() if value is not None})
    return EXIT_FAILED if run(plan, device, args.only, args.out, args.cpu_smoke) else 0
