"""`benchmarks local`'s table estimates: what they count (no training here; the figures are its own)."""

import pytest

from benchmarks import bench_local
from harness.config import RECIPES_DIR
from harness.recipe import load_recipe
from sar.models import MODEL_NAMES


@pytest.mark.slow
def test_an_estimate_counts_every_training_run_upstream_included_and_names_the_rest(capsys):
    """Tab. 4: its fine-tunes (each on its target's synthetic images) and the Tab. 2 runs they start from,
    once each, at one second per epoch per 1,000 training images plus the once-per-run seconds, and half
    a second per validation of 2,400 images (each validated at its final epoch only); none estimated for
    its own evaluations, and Tab. 5's evaluations are named, not timed."""
    per_epoch = dict.fromkeys(MODEL_NAMES, bench_local.EpochCost(1.0, 0.5, 2400, 2.0))
    _, runs = load_recipe(RECIPES_DIR / "table4.yaml", ["scale=local"])
    upstream = {run.upstream.folder: run.upstream for run in runs}
    assert len(upstream) == 2 * 3  # ViT-S/16 with and without SAR, three seeds
    every = [*runs, *upstream.values()]
    assert all(r.config.train.eval_every == r.config.epochs for r in every)
    synthetic = [r.config.data.synthetic for r in every]
    expected = sum(
        (r.config.epochs + 2.0) * s.num_classes * s.train_per_class / 1000
        + 0.5 * s.num_classes * s.val_per_class / 2400
        for r, s in zip(every, synthetic, strict=True)
    )
    row = bench_local._table("table4", per_epoch)
    assert row["training_minutes"] == pytest.approx(expected / 60)
    assert row["not_estimated"] == {} and row["seeds"] == [0, 1, 2]
    curves = bench_local._table("figure3", per_epoch)  # six runs, each validated at all its epochs
    _, figure3 = load_recipe(RECIPES_DIR / "figure3.yaml", ["scale=local"])
    assert curves["training_minutes"] == pytest.approx(sum(r.config.epochs * 1.5 + 2.0 for r in figure3) / 60)
    row = bench_local._table("table5", per_epoch)
    assert row["not_estimated"] == {"evaluate": 6}
    assert "not estimated: 6 evaluate run(s)" in capsys.readouterr().out


def test_what_a_table_could_tell_follows_its_sizes_and_tab1s_spread(capsys):
    """Tab. 1's 2,400 validation images give a 1-point sampling error at 60 %; three seeds whose differences
    spread by 1.5 detect `detectable_gain(1.5, 3)`; the paper's SAR gains in top-1 span Tab. 1b's -0.46
    (no MLP skip) to Tab. 1c's +4.42 (SAR at 300 epochs). A recipe without top-1 says so."""
    from harness.report.aggregate import detectable_gain

    row = bench_local._resolution("table1", 60.0, 1.5)
    assert row["val_images"] == 2400 and row["sampling_error"] == pytest.approx(1.0, abs=0.01)
    assert row["detectable"] == pytest.approx(detectable_gain(1.5, 3))
    assert (row["paper_low"], row["paper_high"]) == (-0.46, 4.42)  # at the paper's precision
    row = bench_local._resolution("table6", 60.0, 1.5)
    assert "detectable" not in row
    assert "no top-1 rows (jaccard)" in capsys.readouterr().out


def test_what_a_tables_own_seeds_could_tell_is_read_from_the_store(tmp_path):
    """A local Tab. 1 store with known per-seed values: sub-table 1b's detectable gain pools the spreads of
    its rows' per-seed differences from row A, computed here from the values written."""
    import json
    import math
    import statistics

    from harness.core.result import Best, Result
    from harness.report.aggregate import detectable_gain
    from harness.results import write_result

    store = ["scale=local", "seeds=[0,1,2]", f"runs_root={tmp_path}"]
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", store)
    by_row: dict[str, dict[int, float]] = {}
    for index, run in enumerate(runs):
        top1 = 60.0 + index + run.seed * (index % 4) * 0.7 + (run.seed == 2) * (index % 3)
        run.folder.mkdir(parents=True)
        (run.folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_top1": top1}) + "\n")
        write_result(run.folder, Result(metrics={"top1": top1}, best=Best({"top1": top1}, epoch=1)))
        for row in run.rows:
            by_row.setdefault(row, {})[run.seed] = top1
    spreads = [
        statistics.stdev(by_row[row][s] - by_row["1b/A"][s] for s in range(3))
        for row in ("1b/B", "1b/C", "1b/D", "1b/E", "1b/F")
    ]
    pooled = math.sqrt(statistics.mean(s**2 for s in spreads))
    table1 = bench_local._local_runs(RECIPES_DIR / "table1.yaml", tmp_path)
    found = {r["group"]: r for r in bench_local._measured_resolution(*table1)}
    assert found["1b"]["pairs"] == 3 and found["1b"]["diff_sd"] == pytest.approx(pooled)
    assert found["1b"]["detectable"] == pytest.approx(detectable_gain(pooled, 3))
    assert found["1b"]["val_images"] == 2400
    assert (found["1b"]["paper_low"], found["1b"]["paper_high"]) == (-0.46, 2.5)  # not -0.4599999...
    table6 = bench_local._local_runs(RECIPES_DIR / "table6.yaml", tmp_path)
    assert bench_local._measured_resolution(*table6) == []  # none of its runs


def test_the_spatial_entropy_of_each_row_is_paired_with_its_baselines_from_the_store(tmp_path):
    """Each run's final-epoch L_se (an earlier epoch's is ignored) against its baseline row's on the same
    seeds: the mean difference and its 95 % interval, checked against SciPy's paired t-test."""
    import json

    from scipy import stats

    from harness.core.result import Best, Result
    from harness.results import write_result

    store = ["scale=local", "seeds=[0,1,2]", f"runs_root={tmp_path}"]
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", store)
    final: dict[str, dict[int, float]] = {}
    for index, run in enumerate(runs):
        se = 0.3 - 0.01 * index + 0.004 * run.seed**2 + 0.002 * (index % 5) * run.seed
        epochs = [{"epoch": 1, "train_se": 9.0}, {"epoch": 2, "train_se": se, "val_top1": 50.0}]
        run.folder.mkdir(parents=True)
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
        write_result(run.folder, Result(metrics={"top1": 50.0}, best=Best({"top1": 50.0}, epoch=2)))
        for row in run.rows:
            final.setdefault(row, {})[run.seed] = se
    table1 = bench_local._local_runs(RECIPES_DIR / "table1.yaml", tmp_path)
    found = {r["row"]: r for r in bench_local._measured_entropy(*table1)}
    sar, base = [final["1b/F"][s] for s in range(3)], [final["1b/A"][s] for s in range(3)]
    differences = [a - b for a, b in zip(sar, base, strict=True)]
    expected = stats.ttest_rel(sar, base)
    low, high = expected.confidence_interval(0.95)
    f = found["1b/F"]
    assert f["baseline"] == "1b/A" and f["pairs"] == 3
    assert (f["se_base"], f["se"]) == (pytest.approx(sum(base) / 3), pytest.approx(sum(sar) / 3))
    assert f["se"] - f["se_base"] == pytest.approx(sum(differences) / 3)
    assert (f["ci_low"], f["ci_high"], f["p"]) == (
        pytest.approx(low),
        pytest.approx(high),
        pytest.approx(expected.pvalue),
    )
    assert "1b/A" not in found  # a baseline has no row to be paired with


def test_the_render_cache_benchmark_passes_over_a_local_tab2_runs_images(monkeypatch):
    """Two passes over the local Tab. 2 run's 1,000 train and 2,400 val images: the first draws each image
    once, the second none (the draws counted, not timed)."""
    from harness.data import synthetic

    drawn = []
    draw = synthetic.SyntheticShapes._draw
    monkeypatch.setattr(synthetic.SyntheticShapes, "_draw", lambda self, i: drawn.append(i) or draw(self, i))
    found = bench_local._render_cache()
    assert found["images"] == 10 * (100 + 240) == len(drawn)
    assert found["rendered_s"] > 0 and found["kept_s"] > 0
