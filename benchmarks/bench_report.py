"""Report generation over 1,000 run folders (100 rows x 10 seeds, 30 logged epochs each, final and best
epochs, the paper's printed gains to check, a tenth of them wrong), written by this benchmark into a
temporary run store; the target is under 5 seconds."""

import json
import random
import tempfile
import time
from pathlib import Path

from harness.recipe import load_recipe
from harness.report.render import render_index, render_table

ROWS, SEEDS, EPOCHS = 100, 10, 30


def _recipe(folder: Path) -> Path:
    rows = "\n".join(
        f'  - {{id: "r{i}", group: "sweep", label: "lambda = {i / 1000:g}", last_block: sar,'
        f" loss: {{sar: true, weight: {i / 1000}}}, paper: {{top1: {70 + i / 10}}},"
        f" paper_gain: {{top1: {i / 10 + (0.5 if i % 10 == 0 else 0)}}}, baseline: r0}}"
        for i in range(ROWS)
    )
    path = folder / "bench.yaml"
    path.write_text(
        "defaults: [recipe_schema, {protocol: deit}, _self_]\n"
        "name: bench\ntitle: 'Bench: 1,000 runs'\nreproduces: 'nothing: a benchmark'\n"
        f"model: sar_vit_tiny_patch16_224\ndataset: synthetic\nepochs: {EPOCHS}\n"
        f"seeds: {list(range(SEEDS))}\nlambda_sweep: sweep\nruns_root: {folder / 'runs'}\nrows:\n{rows}\n"
    )
    return path


def _fill_store(recipe: Path) -> int:
    rng = random.Random(0)
    _, runs = load_recipe(recipe)
    for run in runs:
        run.folder.mkdir(parents=True)
        curve = [
            {"epoch": e, "val_top1": 50 + e + rng.random(), "val_top5": 90.0} for e in range(1, EPOCHS + 1)
        ]
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
        best = max(curve, key=lambda r: r["val_top1"])
        result = {
            "metrics": {"top1": curve[-1]["val_top1"], "top5": curve[-1]["val_top5"]},
            "best": {"top1": best["val_top1"], "epoch": best["epoch"]},
            "gpu_hours": 1.0,
        }
        (run.folder / "result.json").write_text(json.dumps(result))
    return len(runs)


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = _recipe(folder)
        n_runs = _fill_store(recipe)
        start = time.perf_counter()
        render_table(recipe, [], folder / "reports", tolerance=0.5)
        render_index(folder / "reports")
        seconds = time.perf_counter() - start
    met = "met" if seconds < 5 else "MISSED"
    print(f"\nreport over {n_runs} run folders: {seconds:.2f} s (target < 5 s: {met})")
    return [{"run_folders": n_runs, "seconds": seconds, "target_seconds": 5.0}]
