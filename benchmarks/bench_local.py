"""Whether the local scale learns, and how long each local table takes: the targets of the local scale.

1. Trains the local Tab. 1 baseline row (1b/A, ViT-S/16's local member on the synthetic stand-in for
   ImageNet-100) once per default local seed (`local.seeds`, three), in this process, in a temporary run
   store, and prints its mean top-1 against the target (60 %).
2. Times two local epochs of each model family (Tab. 2's baseline rows) and prints, per recipe, the time
   of its training runs with their default seeds, upstream runs included: (epochs x the family's measured
   time per epoch (the second epoch's) + what a run spends once (the rest of the two-epoch run's wall
   time)) x the run's training images over 1,000. The targets: Tab. 1 within 30 minutes, every other
   table within 20. A step costs the same within a few percent whatever the last block and loss
   (`benchmarks models`). Runs of the other engines
   (evaluations, self-supervised pre-training, probes, segmentation) are not estimated: the recipe's line
   says how many it has, and the README gives their measured times.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from harness.core.result import Result

TARGET_TOP1 = 60.0
TARGET_MIN = {"table1": 30.0}  # every other recipe: DEFAULT_TARGET_MIN
DEFAULT_TARGET_MIN = 20.0
ROW = "1b/A"
REFERENCE_IMAGES = 1000  # the synthetic stand-in's training images, which the calibration trains on


def _load(recipe: str, overrides: list[str]):
    from harness.config import RECIPES_DIR
    from harness.recipe import load_recipe

    return load_recipe(RECIPES_DIR / f"{recipe}.yaml", ["scale=local", *overrides])


def _train(
    recipe: str, row: str, seed: int, runs_root: str, epochs: int | None = None
) -> tuple[Result, Path]:
    """(result, run folder) of `row` of `recipe` at local scale, trained in this process; `epochs` cuts the
    run short (a timing run: its folder keeps the full run's uid, in a temporary store)."""
    from harness.engines import train_run

    store = [f"seeds=[{seed}]", f"runs_root={runs_root}", "launcher=inline", "train.progress=false"]
    _, runs = _load(recipe, store)
    (run,) = [r for r in runs if row in r.rows]
    config = OmegaConf.to_container(run.config)
    config["epochs"] = epochs or config["epochs"]
    return train_run(config, run.uid), run.folder


def _baseline(seeds: list[int], store: str) -> dict:
    """The local Tab. 1 baseline row's top-1 over `seeds`."""
    top1 = []
    for seed in seeds:
        result, _ = _train("table1", ROW, seed, store)
        top1.append(result.metrics["top1"])
    row = {
        "row": ROW,
        "seeds": seeds,
        "top1": top1,
        "top1_mean": statistics.mean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "target_top1": TARGET_TOP1,
    }
    verdict = "met" if row["top1_mean"] >= TARGET_TOP1 else "NOT met"
    print(
        f"  local Tab. 1 {ROW}: top-1 {row['top1_mean']:.1f} ± {row['top1_std']:.1f} over seeds {seeds} "
        f"{top1} (target >= {TARGET_TOP1:.0f}: {verdict})"
    )
    return row


def _seconds_per_epoch(store: str) -> dict[str, tuple[float, float]]:
    """Each model family's (seconds per local epoch on the stand-in's 1,000 images with its validation,
    seconds a run spends once: building the model and loaders, rendering the images in its first epoch,
    writing its results), measured on a two-epoch run."""
    _, runs = _load("table2", [])
    rows = {run.config.model: run.rows[0] for run in runs if not run.config.loss.sar}
    measured = {}
    for model, row in rows.items():
        start = time.perf_counter()
        _, folder = _train("table2", row, 0, store, epochs=2)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        second = next(r["seconds"] for r in records if r.get("epoch") == 2)
        measured[model] = second, max(0.0, wall - 2 * second)
        print(f"  {model}: {second:.2f} s per local epoch, {wall - 2 * second:.2f} s once per run")
    return measured


def _every_run(runs) -> list:
    """The recipe's runs and the upstream runs they consume, once each."""
    seen = {}
    for run in runs:
        while run is not None:
            seen.setdefault(run.folder, run)
            run = run.upstream
    return list(seen.values())


def _table(recipe: str, per_epoch: dict[str, tuple[float, float]]) -> dict:
    """The estimated minutes of `recipe`'s training runs at local scale, with its default seeds."""
    from harness.config.protocols import SupervisedProtocol
    from harness.engines.spec import spec_of

    config, runs = _load(recipe, [])
    seconds, others = 0.0, {}
    for run in _every_run(runs):
        c = run.config
        # estimated: supervised training (from scratch or fine-tuning), epochs x a measured supervised epoch
        if not issubclass(spec_of(c.engine).protocol, SupervisedProtocol):
            others[c.engine] = others.get(c.engine, 0) + 1
            continue
        images = c.data.synthetic.num_classes * c.data.synthetic.train_per_class * c.data.fraction
        epoch, once = per_epoch[c.model]
        seconds += (c.epochs * epoch + once) * images / REFERENCE_IMAGES
    target = TARGET_MIN.get(recipe, DEFAULT_TARGET_MIN)
    row = {
        "recipe": recipe,
        "seeds": list(config.seeds),
        "training_minutes": seconds / 60,
        "not_estimated": others,
        "target_minutes": target,
    }
    verdict = "within" if row["training_minutes"] <= target else "OVER"
    rest = f"; not estimated: {', '.join(f'{n} {e}' for e, n in others.items())} run(s)" if others else ""
    print(
        f"  {recipe:<19} seeds {row['seeds']}: training runs about {row['training_minutes']:4.1f} min "
        f"({verdict} {target:.0f}){rest}"
    )
    return row


def run(quick: bool = False) -> list[dict]:
    from harness.config import RECIPES_DIR

    config, _ = _load("table1", [])
    seeds = list(config.seeds)[:1] if quick else list(config.seeds)
    with tempfile.TemporaryDirectory() as store:
        start = time.perf_counter()
        rows = [_baseline(seeds, store)]
        rows[0]["seconds_per_run"] = (time.perf_counter() - start) / len(seeds)
        per_epoch = _seconds_per_epoch(store)
    rows.append({"seconds_per_epoch": per_epoch})
    recipes = sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))
    rows.extend(_table(recipe, per_epoch) for recipe in recipes)
    return rows
