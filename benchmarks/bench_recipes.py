"""Validating and expanding every shipped recipe at both scales (Hydra composition, overrides, the meta-
device model checks, uids). Target: under 2 s for all of them together, in a process that has imported
the harness. The baseline measured beside it is one structured OmegaConf merge of the Run schema (what
resolving one run used to cost per row)."""

import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from benchmarks.timing import median_seconds
from harness.config import RECIPES_DIR, recipe_paths
from harness.config.schema import Run

REPO = Path(__file__).resolve().parents[1]


def _all_recipes() -> int:
    from harness.recipe import load_recipe

    return sum(
        len(load_recipe(path, [f"scale={scale}"])[1])
        for path in recipe_paths(RECIPES_DIR)
        for scale in ("paper", "local")
    )


def _fresh_process_seconds() -> float:
    """A new interpreter: imports (torch, timm, Hydra) and every model check done from nothing."""
    code = "from benchmarks.bench_recipes import _all_recipes; _all_recipes()"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
    return time.perf_counter() - start


def run(quick: bool = False) -> list[dict]:
    import harness.recipe  # noqa: F401  (imports are not what this measures; the fresh process shows them)
    import sar.models  # noqa: F401

    start = time.perf_counter()
    runs = _all_recipes()
    first = time.perf_counter() - start
    warm = median_seconds(_all_recipes, repeats=1 if quick else 3, warmup=0)
    fresh = _fresh_process_seconds()
    template = OmegaConf.structured(Run)
    merge = median_seconds(lambda: OmegaConf.merge(template, {"epochs": 3}), repeats=20, warmup=2)
    met = "met" if first < 2 else "MISSED"
    print(
        f"\nevery recipe at both scales ({runs} runs): first pass {first:.2f} s (target < 2 s: {met}), "
        f"warm {warm:.2f} s, fresh process with imports {fresh:.2f} s"
    )
    print(
        f"baseline: one structured merge of the Run schema {merge * 1e3:.1f} ms; the first pass costs "
        f"{first / merge:.0f} of them, {first / runs * 1e3:.0f} ms per run"
    )
    return [
        {
            "runs": runs,
            "first_s": first,
            "warm_s": warm,
            "fresh_process_s": fresh,
            "structured_merge_s": merge,
            "target_s": 2.0,
        }
    ]
