"""The learning rate of every step: cosine with linear warm-up, stepped per epoch (DeiT's `main.py`) or per
iteration (Swin's, `protocol.lr_per_step`), through timm's scheduler so the curve is timm's. And lambda of
every epoch: constant (the paper) or the public SAR code's warm-up + cosine."""

import math

import numpy as np
from omegaconf import DictConfig
from timm.scheduler import CosineLRScheduler
from torch.optim import Optimizer


class LrSchedule:
    def __init__(self, optimizer: Optimizer, protocol: DictConfig, epochs: int, steps_per_epoch: int) -> None:
        self.per_step, self.steps_per_epoch = protocol.lr_per_step, steps_per_epoch
        unit = steps_per_epoch if self.per_step else 1
        # the cosine spans the epochs before the cool-down, which stay at lr_min (at least one epoch of it)
        self.scheduler = CosineLRScheduler(
            optimizer,
            t_initial=max(epochs - protocol.cooldown_epochs, 1) * unit,
            lr_min=protocol.min_lr,
            warmup_t=protocol.warmup_epochs * unit,
            warmup_lr_init=protocol.warmup_lr,
            cycle_limit=1,
            t_in_epochs=not self.per_step,
        )

    def set(self, epoch: int, step: int) -> None:
        """The rate for `step` (0-based) of `epoch` (0-based); per-epoch schedules change at step 0 only."""
        if self.per_step:
            self.scheduler.step_update(epoch * self.steps_per_epoch + step)
        elif step == 0:
            self.scheduler.step(epoch)

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


def loss_weight(loss: DictConfig, epoch: int, epochs: int) -> float:
    """lambda at `epoch` (0-based). `warmup_cosine` is SAR's `main.py` (its utils.cosine_scheduler, one value
    per epoch): `linspace(0, lambda, warmup)` over the warm-up epochs, then
    `0.5 * lambda * (1 + cos(pi * i / n))` for the n = epochs - warmup epochs after it, i = 0..n-1."""
    if loss.schedule == "constant":
        return loss.weight
    warmup = min(loss.warmup_epochs, epochs)
    if epoch < warmup:
        return float(np.linspace(0.0, loss.weight, warmup)[epoch])
    steps = epochs - warmup
    return 0.5 * loss.weight * (1 + math.cos(math.pi * (epoch - warmup) / steps))


def evaluates_at(done: int, every: int, total: int) -> bool:
    """Whether an engine evaluates after `done` of its `total` epochs (or iterations): every `every`-th,
    and after the last."""
    return done % every == 0 or done == total
