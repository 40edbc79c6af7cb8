"""Whether the local scale learns, and how long each local table takes: the targets of the local scale.

1. Trains the local Tab. 1 baseline row (1b/A, ViT-S/16's local member on the synthetic stand-in for
   ImageNet-100) once per default local seed (`local.seeds`, three), in this process, in a temporary run
   store, and prints its mean top-1 against the target (60 %).
2. Times two local epochs of each model family (Tab. 2's baseline rows, the second one validated) and
   prints, per recipe, the time of its training runs with their default seeds, upstream runs included:
   (epochs x the family's measured training epoch + what a run spends once (the rest of the two-epoch
   run's wall time)) x the run's training images over 1,000, + its validations x the family's measured
   validation x its validation images over the measured run's. The targets: Tab. 1 within 30 minutes,
   every other table within 20. A step costs the same within a few percent whatever the last block and
   loss (`benchmarks models`). Runs of the other engines (evaluations, self-supervised pre-training,
   probes, segmentation) are not estimated: the recipe's line says how many it has, and
   docs/local-scale.md gives their measured times.
3. What each local table could tell: the Tab. 1 SAR row (1b/F) is trained on the baseline's seeds, and the
   spread of the per-seed differences gives, per recipe with top-1 rows, the smallest gain its seeds could
   detect (a paired t-test at level 0.05 with power 0.8, `harness.report.aggregate.detectable_gain`) beside
   the paper's gains there, and the sampling error of one run's top-1 on its validation images. With
   `--store DIR` (a run store holding finished local runs), every sub-table and metric of every recipe
   found there is measured from its own seeds instead, as its report says; and each row's spatial
   entropy (L_se of the last block's maps over its final training epoch) against its baseline's, paired.
4. What the process-wide render cache saves a run: one pass over a local run's synthetic images rendered
   from nothing, against the same pass over the kept renders.
"""

import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from harness.core.result import Result
from harness.report.formatting import gain_span

TARGET_TOP1 = 60.0
TARGET_MIN = {"table1": 30.0}  # every other recipe: DEFAULT_TARGET_MIN
DEFAULT_TARGET_MIN = 20.0
ROW = "1b/A"
SAR_ROW = "1b/F"  # A + SAR: the pair whose per-seed differences stand for every table's
REFERENCE_IMAGES = 1000  # the synthetic stand-in's training images, which the calibration trains on


class EpochCost(NamedTuple):
    """A model family's measured local seconds: a training epoch on `REFERENCE_IMAGES` images, one
    validation on `val_images` images (the EMA model's too where the protocol keeps one), and what a run
    spends once (building the model and loaders, rendering its images, writing its results)."""

    train: float
    validate: float
    val_images: int
    once: float


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


def _top1(row: str, seeds: list[int], store: str) -> list[float]:
    """`row` of the local Tab. 1's top-1 for each of `seeds`."""
    return [_train("table1", row, seed, store)[0].metrics["top1"] for seed in seeds]


def _baseline(seeds: list[int], store: str) -> dict:
    """The local Tab. 1 baseline row's top-1 over `seeds`."""
    top1 = _top1(ROW, seeds, store)
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


def _pairs(baseline: dict, store: str) -> dict:
    """The Tab. 1 SAR row on the baseline row's seeds: the per-seed differences and their spread."""
    seeds = baseline["seeds"]
    sar = _top1(SAR_ROW, seeds, store)
    differences = [a - b for a, b in zip(sar, baseline["top1"], strict=True)]
    sd = statistics.stdev(differences) if len(differences) > 1 else math.nan
    print(
        f"  local Tab. 1 {SAR_ROW} - {ROW} per seed: {', '.join(f'{d:+.2f}' for d in differences)} "
        f"(spread {sd:.2f})"
    )
    return {"row": SAR_ROW, "top1": sar, "differences": differences, "diff_sd": sd}


def _resolution(recipe: str, top1: float, diff_sd: float) -> dict:
    """What `recipe`'s local top-1 rows could tell, were their per-seed differences to spread as Tab. 1's
    SAR pair's (`diff_sd`) and their top-1 to sit near Tab. 1's baseline (`top1`)."""
    from harness.report.aggregate import cells, detectable_gain, paper_gains, sampling_error, trained_of

    config, runs = _load(recipe, [])
    row = {"recipe": recipe, "seeds": len(config.seeds), "metrics": list(config.metrics)}
    if "top1" not in config.metrics:
        print(f"  {recipe:<19} no top-1 rows ({', '.join(config.metrics)}): see --store or its report")
        return row
    images = max(trained_of(run)["val_images"] for run in runs)
    frame = cells(config, [])
    paper = paper_gains(frame[(frame["metric"] == "top1") & frame["sar"]]).dropna()
    row |= {
        "val_images": images,
        "sampling_error": sampling_error(top1, images),
        "detectable": detectable_gain(diff_sd, row["seeds"]),
        "paper_low": float(paper.min()) if not paper.empty else math.nan,
        "paper_high": float(paper.max()) if not paper.empty else math.nan,
    }
    print(
        f"  {recipe:<19} {images:>5,} val images: sampling error {row['sampling_error']:.1f} points; "
        f"{row['seeds']} seeds detect a gain of {row['detectable']:.1f} or more; the paper's SAR gains "
        f"{gain_span(row['paper_low'], row['paper_high']) or 'none printed'}"
    )
    return row


def _local_runs(recipe_path: Path, store: Path) -> tuple[DictConfig, list]:
    """(recipe, records) of a recipe's local runs in `store`, read once for every measure below."""
    from harness.report.render import read_table

    recipe, _, records = read_table(recipe_path, ["scale=local", f"runs_root={store.resolve()}"])
    return recipe, records


def _measured_resolution(recipe: DictConfig, records: list) -> list[dict]:
    """Per sub-table and metric of a recipe's finished local runs (`_local_runs`): what its own seeds
    could detect (`harness.report.aggregate.power`), as its report says."""
    from harness.report.aggregate import cells, power

    if not any(record.result is not None for record in records):
        return []
    frame, rows = cells(recipe, records), []
    for group, part in frame.groupby("group", sort=False):
        for metric in recipe.metrics:
            found = power(part, metric)
            if found is None:
                continue
            rows.append({"recipe": recipe.name, "group": group, "metric": metric, **found})
            error = found["sampling_error"]
            sampled = "" if math.isnan(error) else f"; sampling error {error:.1f} on {found['val_images']:,}"
            print(
                f"  {recipe.name:<19} ({group or '-'}) {metric}: detectable {found['detectable']:.2f} "
                f"({found['pairs']} pairs, spread {found['diff_sd']:.2f}); the paper's gains "
                f"{gain_span(found['paper_low'], found['paper_high']) or 'none printed'}{sampled}"
            )
    return rows


def _final_entropy(record) -> float | None:
    """The mean spatial entropy L_se of the last block's maps over the run's final training epoch (logged
    for every supervised run, as a loss only where SAR is on); None where the run logged none."""
    epochs = [m for m in record.metrics if "train_se" in m]
    return epochs[-1]["train_se"] if record.result is not None and epochs else None


def _measured_entropy(recipe: DictConfig, records: list) -> list[dict]:
    """Per row with a baseline among a recipe's finished local runs (`_local_runs`): the paired difference
    of the final epoch's spatial entropy (`_final_entropy`) on the seeds both have, with its 95 % interval."""
    from harness.report.aggregate import paired

    entropy: dict[str, dict[int, float]] = {}
    for record in records:
        value = _final_entropy(record)
        for row in record.rows if value is not None else ():
            entropy.setdefault(row, {})[record.seed] = value
    found = []
    for row in recipe.rows:
        if not row.baseline or row.id not in entropy or row.baseline not in entropy:
            continue
        mine, base = entropy[row.id], entropy[row.baseline]
        test = paired(mine, base)
        if not test:
            continue
        seeds = sorted(set(mine) & set(base))
        low, high = (statistics.fmean(values[s] for s in seeds) for values in (base, mine))
        found.append(
            {
                "recipe": recipe.name,
                "row": row.id,
                "baseline": row.baseline,
                "se_base": low,
                "se": high,
                **test,
            }
        )
        print(
            f"  {recipe.name:<19} {row.id} - {row.baseline}: L_se {low:.3f} -> {high:.3f}, "
            f"{high - low:+.3f} [{test['ci_low']:+.3f}, {test['ci_high']:+.3f}] ({test['pairs']} pairs, "
            f"p = {test['p']:.3f})"
        )
    return found


def _render_cache() -> dict:
    """What a run saves when its process has already rendered its synthetic images (a local table's runs
    share one process): one pass over a local Tab. 2 run's train and val splits rendered from nothing
    (a dataset seed no run uses, so nothing is cached) against the same pass over the kept renders."""
    from harness.data.synthetic import SyntheticConfig, SyntheticShapes

    _, runs = _load("table2", [])
    fields = dict(runs[0].config.data.synthetic)
    config = SyntheticConfig(**{**fields, "seed": 2**31 - 1})
    seconds = []
    for _ in ("rendered", "kept"):
        start = time.perf_counter()
        for split in ("train", "val"):
            data = SyntheticShapes(config, split)
            for index in range(len(data)):
                data[index]
        seconds.append(time.perf_counter() - start)
    images = config.num_classes * (config.train_per_class + config.val_per_class)
    cold, warm = seconds
    print(
        f"  a local Tab. 2 run's {images:,} synthetic images: {cold:.2f} s rendered, {warm:.2f} s kept "
        f"({cold / warm:.0f}x); {cold - warm:.2f} s saved for each run of a table after its first"
    )
    return {"images": images, "rendered_s": cold, "kept_s": warm}


def _seconds_per_epoch(store: str) -> dict[str, EpochCost]:
    """Each model family's local costs, measured on a two-epoch run whose second epoch is validated."""
    _, runs = _load("table2", [])
    rows = {run.config.model: run for run in runs if not run.config.loss.sar}
    measured = {}
    for model, run in rows.items():
        start = time.perf_counter()
        _, folder = _train("table2", run.rows[0], 0, store, epochs=2)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        second = next(r for r in records if r.get("epoch") == 2)
        once = max(0.0, wall - sum(r["seconds"] for r in records))
        synthetic = run.config.data.synthetic
        cost = EpochCost(
            train=second["train_seconds"],
            validate=second["seconds"] - second["train_seconds"],
            val_images=synthetic.num_classes * synthetic.val_per_class,
            once=once,
        )
        measured[model] = cost
        print(
            f"  {model}: {cost.train:.2f} s per local epoch, {cost.validate:.2f} s per validation of "
            f"{cost.val_images} images, {cost.once:.2f} s once per run"
        )
    return measured


def _every_run(runs) -> list:
    """The recipe's runs and the upstream runs they consume, once each."""
    seen = {}
    for run in runs:
        while run is not None:
            seen.setdefault(run.folder, run)
            run = run.upstream
    return list(seen.values())


def _table(recipe: str, per_epoch: dict[str, EpochCost]) -> dict:
    """The estimated minutes of `recipe`'s training runs at local scale, with its default seeds."""
    from harness.config.protocols import SupervisedProtocol
    from harness.core.schedule import evaluates_at
    from harness.engines.spec import spec_of

    config, runs = _load(recipe, [])
    seconds, others = 0.0, {}
    for run in _every_run(runs):
        c = run.config
        # estimated: supervised training (from scratch or fine-tuning), epochs x a measured supervised epoch
        if not issubclass(spec_of(c.engine).protocol, SupervisedProtocol):
            others[c.engine] = others.get(c.engine, 0) + 1
            continue
        synthetic, cost = c.data.synthetic, per_epoch[c.model]
        images = synthetic.num_classes * synthetic.train_per_class * c.data.fraction
        val_images = synthetic.num_classes * synthetic.val_per_class
        seconds += (c.epochs * cost.train + cost.once) * images / REFERENCE_IMAGES
        validations = sum(evaluates_at(e, c.train.eval_every, c.epochs) for e in range(1, c.epochs + 1))
        seconds += validations * cost.validate * val_images / cost.val_images
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


def run(quick: bool = False, store: Path | None = None) -> list[dict]:
    """`store`: also measure what each recipe's finished local runs there could detect."""
    from harness.config import RECIPES_DIR

    config, _ = _load("table1", [])
    seeds = list(config.seeds)[:1] if quick else list(config.seeds)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        rows = [_baseline(seeds, scratch)]
        rows[0]["seconds_per_run"] = (time.perf_counter() - start) / len(seeds)
        per_epoch = _seconds_per_epoch(scratch)
        rows.append(_pairs(rows[0], scratch))
    rows.append(_render_cache())
    rows.append({"seconds_per_epoch": per_epoch})
    recipes = sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))
    rows.extend(_table(recipe, per_epoch) for recipe in recipes)
    baseline, pairs = rows[0], rows[1]
    print(f"  what each table could tell (Tab. 1's {SAR_ROW} - {ROW} spread, top-1 near its baseline):")
    rows.extend(_resolution(recipe, baseline["top1_mean"], pairs["diff_sd"]) for recipe in recipes)
    if store is not None:
        found = [_local_runs(path, store) for path in sorted(RECIPES_DIR.glob("*.yaml"))]
        print(f"  what each table's own seeds could tell, from the finished local runs in {store}:")
        for recipe, records in found:
            rows.extend(_measured_resolution(recipe, records))
        print("  the spatial entropy of the last block's maps, final training epoch, paired on seeds:")
        for recipe, records in found:
            rows.extend(_measured_entropy(recipe, records))
    return rows
