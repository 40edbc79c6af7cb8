"""Whether the local scale learns, and how long it takes: the targets of the local scale, measured.

Trains the local Tab. 1 baseline row (1b/A, ViT-S/16's local member on the synthetic stand-in for
ImageNet-100) once per seed, in this process, in a temporary run store, and prints its mean top-1 against
the target (60 %) and its time per run. The time of the whole local Tab. 1 with three seeds (target: 30
min) is then the epochs of its distinct runs over its default local seeds (`local.seeds`, three) x the
measured time per epoch, printed as an estimate: the rows differ in their last block, loss and epochs, and
a step costs the same within a few percent whatever the block and loss (`benchmarks models`)."""

import statistics
import tempfile
import time

from omegaconf import OmegaConf

TARGET_TOP1 = 60.0
TARGET_TABLE1_MIN = 30.0
ROW = "1b/A"


def _train(seed: int, runs_root: str) -> tuple[float, float]:
    """(final top-1, seconds per epoch) of the baseline row at local scale for one seed."""
    from harness.config import RECIPES_DIR
    from harness.engines import train_run
    from harness.recipe import load_recipe

    overrides = ["scale=local", f"seeds=[{seed}]", f"runs_root={runs_root}", "launcher=inline"]
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", [*overrides, "train.progress=false"])
    (run,) = [r for r in runs if ROW in r.rows]
    start = time.perf_counter()
    result = train_run(OmegaConf.to_container(run.config), run.uid)
    return result["metrics"]["top1"], (time.perf_counter() - start) / run.config.epochs


def run(quick: bool = False) -> list[dict]:
    from harness.config import RECIPES_DIR
    from harness.recipe import load_recipe

    recipe, runs = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local"])  # its default seeds
    seeds = list(recipe.seeds)[:1] if quick else list(recipe.seeds)
    epochs = sum(run.config.epochs for run in runs)
    with tempfile.TemporaryDirectory() as store:
        measured = [_train(seed, store) for seed in seeds]
    top1 = [t for t, _ in measured]
    per_epoch = [s for _, s in measured]
    table_min = epochs * statistics.mean(per_epoch) / 60
    row = {
        "row": ROW,
        "seeds": seeds,
        "top1": top1,
        "top1_mean": statistics.mean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "seconds_per_epoch": per_epoch,
        "table1_three_seeds_min_estimate": table_min,
        "target_top1": TARGET_TOP1,
        "target_table1_min": TARGET_TABLE1_MIN,
    }
    print(
        f"  local Tab. 1 {ROW}: top-1 {row['top1_mean']:.1f} ± {row['top1_std']:.1f} over seeds {seeds} "
        f"(target >= {TARGET_TOP1:.0f}: {'met' if row['top1_mean'] >= TARGET_TOP1 else 'NOT met'}); "
        f"{statistics.mean(per_epoch):.1f} s per epoch"
    )
    verdict = "met" if table_min <= TARGET_TABLE1_MIN else "NOT met"
    print(
        f"  local Tab. 1, {len(runs)} runs over seeds {list(recipe.seeds)} ({epochs} epochs): about "
        f"{table_min:.0f} min (estimated "
        f"from the time per epoch; target <= {TARGET_TABLE1_MIN:.0f}: {verdict})"
    )
    return [row]
