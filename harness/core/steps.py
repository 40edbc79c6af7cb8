"""A training step that never waits for the device: losses are summed on the device, a step whose
gradients are not finite is skipped on the device (the fused AdamW reads `found_inf` itself, as it does
under a GradScaler), and the host reads the sums once every `train.log_every` steps — where it also fails
the run if the loss stayed non-finite too long. DeiT, DINO and MoCo-v3 call `.item()` once per step."""

import math
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig
from timm.optim import create_optimizer_v2
from torch import nn
from torch.distributed import ReduceOp, all_reduce

from harness import distributed
from harness.core.job import RunFailed
from harness.core.precision import Precision

LOSSES = ("loss", "ce", "aux", "drloc")  # the supervised engine's; other engines name their own


def adamw(model: nn.Module, protocol: DictConfig) -> torch.optim.Optimizer:
    # `model`: everything trained, auxiliary heads included (harness.core.model.Training)
    """timm's AdamW (no weight decay on norms, biases and tokens), fused: it skips a step on the device."""
    p = protocol
    return create_optimizer_v2(
        model, "adamw", lr=scaled_lr(p), weight_decay=p.weight_decay, eps=p.opt_eps, fused=True
    )


def scaled_lr(protocol: DictConfig) -> float:
    """The protocol's lr scaled linearly with batch_size / lr_batch_ref (unscaled where that is None)."""
    p = protocol
    return p.lr * p.batch_size / p.lr_batch_ref if p.lr_batch_ref else p.lr


STREAK, STEPS, SKIPPED = "nonfinite_streak", "steps", "skipped_steps"  # what StepTotals keeps in `state`


class StepTotals:
    """Per-window sums of the step losses, kept on the device, and the run's counts: its optimizer steps,
    those skipped, and the streak of non-finite steps, which spans windows, epochs and resumes (a run of
    epochs shorter than `train.max_nonfinite_steps` fails too). The counts live in the run's `state`, which
    every engine checkpoints: they are updated there at each read."""

    def __init__(
        self,
        device: torch.device,
        max_nonfinite: int,
        state: dict[str, Any],
        losses: tuple[str, ...] = LOSSES,
    ) -> None:
        self.device, self.max_nonfinite, self.state = device, max_nonfinite, state
        self.names = (*losses, "steps", "skipped")
        self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=device)
        self.streak = torch.full((), float(state.get(STREAK, 0)), device=device)
        self.longest = self.streak.clone()

    def add(self, *losses_then_bad: torch.Tensor) -> None:
        """The step's losses (scalars, in the order of `losses`), then `bad` (0. or 1., on the device), which
        marks a skipped step: its losses are left out of the sums."""
        *losses, bad = losses_then_bad
        values = torch.stack([loss.detach().float() for loss in losses]).double()
        kept = torch.where(bad.bool(), torch.zeros_like(values), values)
        self.sums += torch.cat([kept, (1 - bad).double()[None], bad.double()[None]])
        self.streak = (self.streak + 1) * bad
        self.longest = torch.maximum(self.longest, self.streak)

    def read(self, world: distributed.World, where: str) -> dict[str, float]:
        """The window's sums averaged over the ranks (one host sync), then a fresh window; raises RunFailed if
        the loss was non-finite `train.max_nonfinite_steps` steps in a row. ("steps" counts the steps taken,
        "skipped" those skipped.)"""
        sums, longest = self.sums.clone(), self.longest.clone()
        if world.size > 1:
            all_reduce(sums)
            all_reduce(longest, op=ReduceOp.MAX)
        read = torch.cat([sums, longest.double()[None], self.streak.double()[None]]).tolist()  # the one read
        *read, longest_streak, streak = read
        # every rank takes the same steps on an equal share of the global batch: the mean over ranks of
        # each step's loss is the global batch's, and the counts are every rank's
        values = {name: total / world.size for name, total in zip(self.names, read, strict=True)}
        if longest_streak >= self.max_nonfinite:
            raise RunFailed(f"the loss was non-finite for {int(longest_streak)} steps in a row ({where})")
        self.state[STREAK] = int(streak)
        self.state[STEPS] = self.state.get(STEPS, 0) + round(values["steps"] + values["skipped"])
        self.state[SKIPPED] = self.state.get(SKIPPED, 0) + round(values["skipped"])
        self.sums.zero_()
        self.longest.copy_(self.streak)  # a streak that crosses windows keeps counting
        return values


def step_counts(state: dict[str, Any]) -> dict[str, int]:
    """result.json's counts of the run's optimizer steps and of those skipped for non-finite values."""
    return {STEPS: state.get(STEPS, 0), SKIPPED: state.get(SKIPPED, 0)}


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    precision: Precision,
    clip: float | None,
    before_update: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Backward and update; returns 1. (on the device) if the step was skipped for non-finite values.
    `before_update` changes the (unscaled) gradients first: DINO clips each parameter's and drops the
    head's last layer's in its first epochs."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    scaler = precision.scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    if before_update is not None:
        before_update()
    grads = [p.grad for p in params if p.grad is not None]
    norm = nn.utils.clip_grad_norm_(params, clip) if clip else nn.utils.get_total_norm(grads)
    if scaler is not None:  # the scaler skips overflowing steps itself and lowers its scale
        scaler.step(optimizer)
        scaler.update()
        return (~torch.isfinite(loss)).float()
    bad = (~torch.isfinite(norm)).float()  # DDP's gradients agree on every rank, so do the skips
    optimizer.found_inf = bad
    optimizer.step()
    return bad


def mean(total: float, count: float) -> float:
    return total / count if count else math.nan
