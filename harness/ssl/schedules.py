"""Per-iteration schedules as DINO's `utils.cosine_scheduler` and MoCo-v3's `adjust_learning_rate` /
`adjust_moco_momentum` compute them: one value per training iteration, so a resumed run reads the value of
its global step and never carries schedule state of its own."""

import math

import numpy as np


def cosine(
    base: float,
    final: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = 0,
    warmup_reaches_base: bool = False,
) -> list[float]:
    """`epochs * steps_per_epoch` values, as Python floats (what optimizers and checkpoints hold): linear
    from 0 over the warm-up iterations, then a half cosine from `base` to `final` over the remaining ones.
    The warm-up's last value is `base` in DINO (`linspace(0, base, n)`, `warmup_reaches_base`) and
    `base * (n - 1) / n` in MoCo-v3 (lr x epoch / warm-up at fractional epochs)."""
    total = epochs * steps_per_epoch
    warmup = min(warmup_epochs * steps_per_epoch, total)
    ramp = np.linspace(0.0, base, warmup, endpoint=warmup_reaches_base)
    after = np.arange(total - warmup)
    decay = final + 0.5 * (base - final) * (1 + np.cos(math.pi * after / max(total - warmup, 1)))
    return np.concatenate([ramp, decay]).tolist()


def teacher_temperatures(warmup_temp: float, temp: float, warmup_epochs: int, epochs: int) -> list[float]:
    """DINO's teacher temperature per epoch: `linspace(warmup_temp, temp, warmup_epochs)` (both ends
    included), then `temp`; cut at `epochs` where the warm-up is longer than the run (DINO's code fails)."""
    warmup = np.linspace(warmup_temp, temp, warmup_epochs)
    return np.concatenate([warmup, np.full(max(epochs - warmup_epochs, 0), temp)])[:epochs].tolist()
