"""`benchmarks local`'s table estimates: what they count (no training here; the figures are its own)."""

import pytest

from benchmarks import bench_local
from harness.config import RECIPES_DIR
from harness.recipe import load_recipe
from sar.models import MODEL_NAMES


@pytest.mark.slow
def test_an_estimate_counts_every_training_run_upstream_included_and_names_the_rest(capsys):
    """Tab. 4: its fine-tunes (each on its target's synthetic images) and the Tab. 2 runs they start from,
    once each, at one second per epoch per 1,000 images plus the once-per-run seconds; none estimated
    for its own evaluations, and Tab. 5's evaluations are named, not timed."""
    per_epoch = dict.fromkeys(MODEL_NAMES, (1.0, 2.0))
    _, runs = load_recipe(RECIPES_DIR / "table4.yaml", ["scale=local"])
    upstream = {run.upstream.folder: run.upstream for run in runs}
    assert len(upstream) == 2 * 3  # ViT-S/16 with and without SAR, three seeds
    expected = sum(
        (r.config.epochs + 2.0)
        * r.config.data.synthetic.num_classes
        * r.config.data.synthetic.train_per_class
        for r in [*runs, *upstream.values()]
    )
    row = bench_local._table("table4", per_epoch)
    assert row["training_minutes"] == pytest.approx(expected / 1000 / 60)
    assert row["not_estimated"] == {} and row["seeds"] == [0, 1, 2]
    row = bench_local._table("table5", per_epoch)
    assert row["not_estimated"] == {"evaluate": 6}
    assert "not estimated: 6 evaluate run(s)" in capsys.readouterr().out
