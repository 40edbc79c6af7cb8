"""Bounds that a value's type does not say, checked before anything launches: numbers that are finite and
integers that fit the int64 that training counts in, seeds, the synthetic dataset's settings, and the
sizes of the `local` block that `scale=local` turns into run values. Each check gives (key, what is wrong
in words); the caller says where the value came from (the file, the row, the override)."""

import math
from typing import Any

from harness.data.synthetic import SyntheticConfig
from harness.text import shown

INT64 = 2**63
SEEDS = 2**32  # numpy's SeedSequence and legacy seeding take [0, 2**32)
Problem = tuple[str, str]
# the local block's counts and sizes: the least each may be
LOCAL_LEAST = {
    "min_epochs": 1,  # so that a local run trains at least one epoch whatever epochs_factor makes of it
    "batch_size": 1,
    "num_workers": 0,
    "target_train_images": 1,
    "target_val_images": 1,
    "cpus": 1,
    "mem_gb": 1,
    "local_crop_size": 1,
    "local_crops_number": 0,
    "head_out_dim": 1,
    "head_hidden_dim": 1,
}
# fractions of a paper-scale count: a local run is smaller (and a count times 1e308 is no count)
LOCAL_FACTORS = ("iterations_factor", "fpn_width_factor")  # in (0, 1]: what they shrink stays >= 1


def got(value: Any, expected: str) -> str:
    return f"got {shown(value)}, expected {expected}"


def numbers(data: Any, prefix: str) -> list[Problem]:
    """Every number in a nested config (dicts and lists) that is not finite or does not fit int64."""
    problems = []
    items = data.items() if isinstance(data, dict) else enumerate(data)
    for key, value in items:
        where = f"{prefix}.{key}" if isinstance(data, dict) else f"{prefix}[{key}]"
        where = where.removeprefix(".")
        if isinstance(value, dict | list):
            problems += numbers(value, where)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append((where, got(value, "a finite number")))
        elif isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
            problems.append((where, got(value, "an integer that fits 64 bits")))
    return problems


def seeds(values: list[int], key: str) -> list[Problem]:
    """Seeds are integers in [0, 2**32): a negative one would alias another (numpy takes it modulo 2**32)."""
    return [(key, got(seed, "seeds in [0, 2**32)")) for seed in values if not 0 <= seed < SEEDS][:1]


def synthetic(settings: dict[str, Any], key: str) -> list[Problem]:
    """The synthetic dataset's settings, checked by the dataset itself."""
    try:
        SyntheticConfig(**settings)
    except ValueError as error:
        return [(key, str(error))]
    return []


def local_block(local: dict[str, Any]) -> list[Problem]:
    """The `local` block of a recipe at `scale=local`: what it makes of every run must train."""
    problems = numbers(local, "local")
    problems += [
        (f"local.{key}", got(local[key], f"at least {least}"))
        for key, least in LOCAL_LEAST.items()
        if local[key] < least
    ]
    problems += [
        (f"local.{key}", got(local[key], "a fraction in (0, 1]"))
        for key in LOCAL_FACTORS
        if not 0 < local[key] <= 1
    ]
    if not 0 <= local["epochs_factor"] <= 1:  # 0: every run trains local.min_epochs
        problems.append(("local.epochs_factor", got(local["epochs_factor"], "a fraction in [0, 1]")))
    return problems + seeds(local["seeds"], "local.seeds") + synthetic(local["synthetic"], "local.synthetic")


def run_values(run: dict[str, Any]) -> list[Problem]:
    """A resolved run's values that its types allow but training cannot take."""
    data, train = run["data"], run["train"]
    problems = numbers(run, "") + seeds([run["seed"]], "seed")
    if data["dataset"] == "synthetic":
        problems += synthetic(data["synthetic"], "data.synthetic")
    if data["num_workers"] < 0:
        problems.append(("data.num_workers", got(data["num_workers"], "at least 0")))
    if train["max_nonfinite_steps"] < 1:
        problems.append(("train.max_nonfinite_steps", got(train["max_nonfinite_steps"], "at least 1")))
    if train["collective_timeout_s"] <= 0:
        problems.append(("train.collective_timeout_s", got(train["collective_timeout_s"], "above 0")))
    if not 0 <= train["max_skipped_fraction"] <= 1:
        problems.append(
            ("train.max_skipped_fraction", got(train["max_skipped_fraction"], "a fraction in [0, 1]"))
        )
    folders = {  # an empty one, as from an unset shell variable, is not the default
        "runs_root": (run["runs_root"], "$SAR_RUNS, else runs/ in the project"),
        "launcher.folder": (run["launcher"]["folder"], "<runs_root>/_submitit"),
    }
    problems += [
        (key, got(value, f"a folder (leave the key out for {default})"))
        for key, (value, default) in folders.items()
        if value is not None and not value.strip()
    ]
    return problems
