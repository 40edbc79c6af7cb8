"""Reports: golden Markdown for a run store built here, scorecard and gain arithmetic, broken run folders,
HTML that parses and links only to files that exist, and byte-identical regeneration; tables of other
metrics (two metrics with their directions, the local mCE normalised by the baseline row, a pivoted group
of datasets, the Jaccard's void pixels) and Fig. 3's quoted points. Reports that do not overstate: the
verdict on a gain against the seeds' spread, the check of the paper's printed gains, gains at the paper's
precision, what was trained at local scale, final and best epochs, the pointer to local-scale runs, the
same bytes from `--all` and from one recipe, and the figures (separate panels, distinguishable curves,
attention overlaid with a colour bar)."""

import json
import math
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib.axes
import numpy as np
import pandas as pd
import pytest
import timm
import torch
from omegaconf import DictConfig, OmegaConf

from harness.config import PROJECT_DIR, RECIPES_DIR
from harness.core.result import Best, Extra, Result
from harness.eval import CORRUPTIONS, EXTRA_CORRUPTIONS, keep_mass
from harness.recipe import load_recipe
from harness.report import attention, figures, formatting
from harness.report.aggregate import RunRecord, audit, cells, jaccard_void, scorecard, verdict, welch_p
from harness.report.render import render_index, render_table, report_stem, write_report
from harness.results import write_result
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

GOLDEN = Path(__file__).parent / "golden" / "tiny-report.md"


def _store(recipe: Path, seeds: int = 2, extra: tuple[str, ...] = ()) -> list:
    """Results for every run of the tiny recipe: base 40 +- seed, sar 45 +- seed."""
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, f"seeds={list(range(seeds))}", *extra])
    for run in runs:
        top1 = (40.0 if "base" in run.rows else 45.0) + run.seed
        run.folder.mkdir(parents=True)
        metrics = [{"epoch": e, "val_top1": top1 - 3 + e, "val_top5": 90.0} for e in (1, 2, 3)]
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        provenance = {
            "git_commit": "0123456789abcdef",
            "git_dirty": False,
            "packages": {"torch": "2.14.1"},
            "host": "node1",
            "gpu": None,
            "world_size": 1,
        }
        best = Best({"top1": top1}, epoch=3)
        result = Result(
            metrics={"top1": top1, "top5": 90.0}, best=best, wall_time_s=360.0, provenance=provenance
        )
        write_result(run.folder, result)
    return runs


def _render(recipe: Path, out: Path, seeds: int = 2, extra: tuple[str, ...] = ()) -> str:
    summary = render_table(
        recipe, [*TINY_OVERRIDES, f"seeds={list(range(seeds))}", *extra], out, tolerance=0.5
    )
    render_index(out)
    return (out / f"{summary['name']}.md").read_text()


def test_markdown_matches_the_golden_file(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _store(recipe)
    assert _render(recipe, tmp_path / "reports") == GOLDEN.read_text()


def test_regenerating_without_new_runs_gives_the_same_files(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _store(recipe)
    out = tmp_path / "reports"
    _render(recipe, out)
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    _render(recipe, out)
    second = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert first == second and any(p.suffix == ".png" for p in first)


def test_the_papers_gains_are_written_as_it_prints_them():
    assert [formatting.gain(v) for v in (2.5, 0.42, -0.46, 4.42, 2.0, 0.0, -0.0, 18.17, 0.1)] == [
        "+2.5",
        "+0.42",
        "-0.46",
        "+4.42",
        "+2",
        "+0",
        "+0",
        "+18.17",
        "+0.1",
    ]
    assert [formatting.number(v) for v in (75.72, 41.0, 52.8, 55)] == ["75.72", "41.0", "52.8", "55.0"]


def test_a_wall_time_is_written_in_the_unit_that_reads():
    assert [formatting.duration(s) for s in (12.4, 59.6, 60.0, 1440.0, 3599.0, 3600.0, 9000.0)] == [
        "12 s",
        "60 s",
        "1 min",
        "24 min",
        "60 min",
        "1.0 h",
        "2.5 h",
    ]


def test_ours_are_written_at_the_papers_precision():
    signed = [formatting.signed(v, 2) for v in (2.0, 0.42, -1.5, -0.001)]
    assert signed == ["+2.00", "+0.42", "-1.50", "+0.00"]
    assert formatting.signed(-1.2, 1) == "-1.2"
    assert formatting.precision([74.22, 74.64, 2.5]) == 2 and formatting.precision([52.8, 51.6, -1.2]) == 1
    assert formatting.precision([math.nan]) == formatting.DEFAULT_DIGITS
    assert formatting.spread(21.0, 0.5, 3, 2) == "21.00 ± 0.50 (n=3)"
    assert formatting.spread(21.0, 0.0, 1, 1, show_n=False) == "21.0"


def test_scorecard_arithmetic():
    frame = pd.DataFrame(
        {
            "mean": [74.0, 76.9, 80.0, math.nan, 75.0, 76.0],
            "paper": [74.22, 76.72, 79.0, 75.0, 74.5, 74.22],
            "gain": [math.nan, 2.9, -0.5, math.nan, 1.0, 2.0],
            "paper_delta": [math.nan, 2.5, 0.3, 0.8, -0.4, 0.0],
            "verdict": ["", "clear", "clear", "", "noise", "clear"],
            "audit": ["", "ok", "mismatch", "", "unchecked", ""],
            "sar": [False, True, True, False, True, True],
        }
    )
    frame["diff"] = frame["mean"] - frame["paper"]
    card = scorecard(frame, tolerance=0.5)
    assert (card.cells_compared, card.within_tolerance) == (5, 3)
    # a paper gain of 0 has no sign to agree with: the last line is not compared
    assert (card.gains_compared, card.gains_clear, card.gains_same_sign, card.gains_noise) == (3, 2, 1, 1)
    assert (card.arithmetic_checked, card.arithmetic_flagged) == (2, 1)
    frame.loc[1, "sar"] = False  # another method's gain (Tab. 13's DRLoc) is not one of SAR's
    card = scorecard(frame, tolerance=0.5)
    assert (card.gains_compared, card.gains_clear, card.gains_same_sign) == (2, 1, 0)


def test_broken_run_folders_are_reported_not_fatal(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    base, sar = sorted(_store(recipe, seeds=1), key=lambda r: r.rows)
    with open(base.folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "val_t')  # truncated line
    (base.folder / "checkpoint.pt").write_bytes(b"")
    (sar.folder / "result.json").write_text('{"metrics": {"top1": 4')  # half-written
    text = _render(recipe, tmp_path / "reports", seeds=1)
    assert "metrics.jsonl line 4: not JSON (Unterminated string" in text
    assert "checkpoint.pt is empty" in text
    assert "failed: result.json: not JSON (Expecting ',' delimiter" in text
    (sar.folder / "result.json").unlink()
    (sar.folder / "metrics.jsonl").unlink()
    assert "| ViT-T + SAR | not run | - | 55.0 (+5.0) | - |" in _render(recipe, tmp_path / "reports", seeds=1)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href")]


@pytest.mark.parametrize("page", ["tiny.html", "index.html"])
def test_html_parses_and_links_only_to_existing_files(tmp_path, page):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _store(recipe)
    out = tmp_path / "reports"
    _render(recipe, out)
    parser = _Links()
    parser.feed((out / page).read_text())
    parser.close()
    assert parser.links
    for link in parser.links:
        assert (out / link).is_file(), link


def test_keep_mass_keeps_the_smallest_set_with_sixty_percent():
    attention = np.array([[0.1, 0.5], [0.3, 0.1]])
    assert keep_mass(attention).tolist() == [[False, True], [True, False]]
    assert keep_mass(np.full((2, 2), 0.25)).sum() == 3  # ties: as many as reach 60%


def _checkpoints(runs) -> None:
    for run in runs:
        config = run.config
        model = timm.create_model(
            config.model,
            num_classes=config.data.synthetic.num_classes,
            last_block=config.last_block,
            **OmegaConf.to_container(config.model_kwargs),
        )
        torch.save({"model": model.state_dict()}, run.folder / "checkpoint.pt")


def test_attention_maps_of_the_baseline_and_sar_rows(tmp_path, monkeypatch):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    runs = _store(recipe, seeds=1)
    _checkpoints(runs)
    drawn = {}
    save = attention.save
    monkeypatch.setattr(
        attention, "save", lambda fig, path: drawn.setdefault(path.name, fig) and save(fig, path)
    )
    text = _render(recipe, tmp_path / "reports", seeds=1)
    for name in ("tiny_attention.png", "tiny_attention_thresholded.png"):
        assert f"figures/{name}" in text and (tmp_path / "reports" / "figures" / name).is_file()
    # 3 images x 2 rows x (the image + 3 heads), and a colour bar; the maps lie over the images
    maps = drawn["tiny_attention.png"]
    assert len(maps.axes) == 3 * 2 * 4 + 1 and "panel's lowest (0)" in maps.axes[-1].get_ylabel()
    # each head's panel on its own scale: its lowest and highest patches span the whole colour map
    overlays = [ax.images[1].get_array()[..., 3] for ax in maps.axes[:-1] if len(ax.images) == 2]
    assert len(overlays) == 3 * 2 * 3
    assert all((float(o.min()), float(o.max())) == pytest.approx((0.1, 0.85)) for o in overlays)
    assert "ViT-T (above) and ViT-T + SAR (below), the runs of seed 0, paper scale" in text
    assert all(len(ax.images) == 2 for ax in maps.axes[:-1] if ax.get_title() != "image" and ax.images[1:])
    kept = drawn["tiny_attention_thresholded.png"]
    assert sum(len(ax.collections) for ax in kept.axes) == 3 * 2 * 3  # one outline per head panel
    assert "60% of the head's attention" in kept.legends[0].get_texts()[0].get_text()
    assert "Baseline" not in text and "ViT-T vs ViT-T + SAR, seed 0" in kept.get_suptitle()
    next(r for r in runs if "sar" in r.rows).folder.joinpath("checkpoint.pt").write_bytes(b"not a checkpoint")
    text = _render(recipe, tmp_path / "reports", seeds=1)
    assert "attention maps: a checkpoint could not be used: attention figure: checkpoint" in text


def _local_table1(root: Path) -> None:
    """Results for every local-scale run of recipes/table1.yaml in `root`, two seeds."""
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local", "seeds=[0,1]", f"runs_root={root}"])
    for index, run in enumerate(runs):
        run.folder.mkdir(parents=True)
        top1 = 20.0 + index + run.seed / 2
        curve = [{"epoch": e, "val_top1": top1 - 3 + e} for e in (1, 2, 3)]
        (run.folder / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in curve))
        write_result(run.folder, Result(metrics={"top1": top1}, best=Best({"top1": top1 + 1}, epoch=2)))


@pytest.mark.slow
def test_report_all_and_report_recipe_write_the_same_bytes(tmp_path, capsys, monkeypatch):
    from harness.cli import main

    _local_table1(tmp_path / "runs")
    monkeypatch.chdir(tmp_path)  # the recipe's label and the store do not depend on the working folder
    local = ["scale=local", "seeds=[0,1]", f"runs_root={tmp_path / 'runs'}"]
    assert main(["report", "--all", *local, "--out", str(tmp_path / "all")]) == 0
    for name in ("table1-local", "table2-local", "figure3-local"):
        assert (tmp_path / "all" / f"{name}.html").is_file()
    index = (tmp_path / "all" / "index.html").read_text()
    assert "table1-local.html" in index and "local" in index
    assert main(["report", str(RECIPES_DIR / "table1.yaml"), *local, "--out", str(tmp_path / "one")]) == 0
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("table1-local*")}
    assert {p.name for p in one} >= {"table1-local.md", "table1-local.html", "table1-local.json"}
    assert any(p.suffix == ".png" for p in one)
    for path, data in one.items():
        assert (tmp_path / "all" / path).read_bytes() == data, path
        if path.suffix != ".png":  # no absolute path: neither the project's nor the run store's
            assert str(PROJECT_DIR).encode() not in data and str(tmp_path).encode() not in data, path
    assert "Recipe: `recipes/table1.yaml`" in (tmp_path / "one" / "table1-local.md").read_text()


def test_a_paper_scale_report_points_to_the_local_runs(tmp_path, capsys):
    from harness.cli import main

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _store(recipe, extra=("scale=local",))
    out = tmp_path / "reports"
    text = _render(recipe, out)
    assert (
        "No run of this recipe at paper scale is in the run store, but 4 local-scale run(s) are (4 done)."
        in text
    )
    assert "`python -m harness report tiny.yaml protocol.batch_size=16 protocol.warmup_epochs=1" in text
    assert "scale=local` (it writes tiny-local.html)" in text
    assert (
        "No run of this recipe at paper scale"
        in json.loads((out / "tiny.json").read_text())["pointer"]["text"]
    )
    assert main(["report", str(recipe), *TINY_OVERRIDES, "seeds=[0,1]", "--out", str(out)]) == 0
    assert "Report them with: python -m harness report tiny.yaml" in capsys.readouterr().out
    local = _render(recipe, out, extra=("scale=local",))  # the local report itself points nowhere
    assert "No run of this recipe" not in local
    _store(recipe)  # with paper-scale runs, the paper-scale report points nowhere either
    assert "No run of this recipe" not in _render(recipe, out)


def test_local_reports_say_what_was_trained(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _store(recipe, extra=("scale=local",))
    text = _render(recipe, tmp_path / "reports", extra=("scale=local",))
    # the tiny rows' own model_kwargs (2 blocks, 48 wide) and the local epochs: max(2, round(3 x 0.08))
    assert (
        "Ours, as trained at local scale: 2 blocks, 48 wide, 3 heads, 32 px; 2 epochs; on synthetic data (10 "
        "classes, 1,000 train / 2,400 val images). Ours: the mean ± std over 2 seeds."
    ) in text
    assert "local scale, the epochs as trained" in text


TAB1C = [
    {"id": f"1c/{model}-{epochs}", "label": label, "column": f"{epochs} ep.", "group": "1c"}
    | {"paper": {"top1": paper}}
    | ({"baseline": f"1c/vit-{epochs}", "paper_gain": {"top1": printed}} if model == "sar" else {})
    for epochs, papers, printed in ((100, (74.22, 76.72), 2.5), (300, (80.82, 85.24), 4.42))
    for (model, label), paper in zip((("vit", "ViT-S/16"), ("sar", "ViT-S/16 + SAR")), papers, strict=True)
]


def _trained(epochs: int, depth: int = 4) -> dict[str, Any]:
    kwargs = {"img_size": 64, "patch_size": 8, "embed_dim": 144, "depth": depth, "num_heads": 6}
    return {"engine": "supervised", "model_kwargs": kwargs, "epochs": epochs, "dataset": "synthetic"} | {
        "stands_for": "imagenet100",
        "classes": 10,
        "train_images": 1000,
        "val_images": 200,
    }


def test_runs_validated_once_have_no_best_epoch_column(tmp_path):
    """A local run validated at its final epoch only: its best is its final value, so neither the column
    nor the note about the best epoch is shown."""
    records = [
        _record(
            f"1c/{row}",
            seed,
            ({"epoch": 8, "val_top1": 21.0},),
            metrics={"top1": 21.0},
            best=Best({"top1": 21.0}),
        )
        for seed in (0, 1)
        for row in ("vit-100", "sar-100")
    ]
    text = _markdown(_recipe(TAB1C, ["top1"], "local"), records, tmp_path)
    assert "best epoch" not in text and "Top-1 ↑ ours" in text


def test_a_segmentations_final_and_best_are_iterations(tmp_path):
    """mIoU is evaluated every few iterations of a segmentation run: its columns and the note say
    iteration, not epoch."""
    rows = [{"id": "pvt", "label": "PVT"}, {"id": "sar", "label": "PVT + SAR", "baseline": "pvt"}]
    records = []
    for seed in (0, 1):
        for row, miou in (("pvt", 92.0), ("sar", 93.0)):
            curve = ({"iteration": 80, "val_miou": miou - 1}, {"iteration": 160, "val_miou": miou})
            record = _record(
                row, seed, curve, metrics={"miou": miou + seed}, best=Best({"miou": miou + seed})
            )
            record.trained = _trained(6) | {"engine": "segmentation", "iterations": 160}
            records.append(record)
    text = _markdown(_recipe(rows, ["miou"], "local"), records, tmp_path)
    assert "mIoU ↑ ours (final iteration) | mIoU ↑ ours (best iteration) |" in text
    assert "Ours (final iteration) is the value at the last iteration" in text and "epoch)" not in text


def test_local_headers_and_labels_say_the_epochs_and_the_model_as_trained(tmp_path):
    records = []
    for seed in (0, 1, 2):
        for row, top1 in (("vit-100", 21.0), ("sar-100", 23.0), ("vit-300", 29.5), ("sar-300", 29.5)):
            curve = ({"epoch": 1, "val_top1": top1 - 5}, {"epoch": 2, "val_top1": top1})
            record = _record(
                f"1c/{row}", seed, curve, metrics={"top1": top1 + seed / 4}, best=Best({"top1": top1 + 1})
            )
            record.trained = _trained(8 if row.endswith("100") else 24)
            records.append(record)
    text = _markdown(_recipe(TAB1C, ["top1"], "local"), records, tmp_path)
    assert (
        "| Model (as trained: 4 blocks, 144 wide, 6 heads, 64 px) | 100 ep. Top-1 ↑ ours (local: 8 epochs; "
        "final epoch) | 100 ep. Top-1 ↑ ours (best epoch) |" in text
    )
    assert "| 300 ep. Top-1 ↑ ours (local: 24 epochs; final epoch) |" in text
    assert (
        "Ours, as trained at local scale: 4 blocks, 144 wide, 6 heads, 64 px; on synthetic stand-in for "
        in text
    )
    sar = "| ViT-S/16 + SAR | 23.25 ± 0.25 (+2.00 [+2.00, +2.00]; clear, paired p<0.001) | 24.00 ± 0.00 |"
    assert sar + " 76.72 (+2.5) |" in text
    html = (tmp_path / "t-local.html").read_text()
    assert '<th colspan="3">100 ep.</th>' in html
    assert '<th rowspan="2">Model (as trained: 4 blocks, 144 wide, 6 heads, 64 px)</th>' in html
    # rows that differ in the model as built say so in their label
    flat = [{"id": "a", "label": "ViT-T/16"}, {"id": "b", "label": "ViT-S/16"}]
    records = [_record("a", metrics={"top1": 1.0}), _record("b", metrics={"top1": 2.0})]
    records[0].trained, records[1].trained = _trained(8, depth=2), _trained(8)
    text = _markdown(_recipe(flat, ["top1"], "local"), records, tmp_path)
    assert "| ViT-T/16 (local: 2 blocks, 144 wide, 6 heads, 64 px) | 1.00 |" in text
    assert "Ours, as trained at local scale: 8 epochs; on synthetic stand-in for imagenet100" in text


def test_every_curve_of_a_panel_is_distinguishable():
    looks = [tuple(sorted((k, str(v)) for k, v in figures.style(i).items())) for i in range(40)]
    assert len(set(looks)) == 40
    for i in range(39):  # neighbours differ in colour and in marker
        a, b = figures.style(i), figures.style(i + 1)
        assert a["color"] != b["color"] and a["marker"] != b["marker"]


def test_curves_one_panel_per_sub_table(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault(path.name, fig))
    curve = tuple({"epoch": e, "val_top1": 10.0 + e} for e in (1, 2, 3))
    records = [_record(r, curve=curve) for r in ("1c/vit-100", "1c/sar-100", "1c/vit-300")]
    rows = [*TAB1C, {"id": "other", "label": "other", "group": "1d"}]
    records.append(_record("other", curve=curve))
    assert figures.curves(_recipe(rows, ["top1"], "local"), records, tmp_path / "c.png", "local")
    fig = drawn["c.png"]
    assert [ax.get_title() for ax in fig.axes] == ["(1c)", "(1d)"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and len({(line.get_color(), line.get_marker()) for line in lines}) == 3
    assert figures.curves(_recipe(rows, ["top1"]), [], tmp_path / "none.png", "paper") is False
    final_only = [_record(r, curve=curve[-1:]) for r in ("1c/vit-100", "1c/sar-100")]
    assert figures.curves(_recipe(rows, ["top1"]), final_only, tmp_path / "one.png", "local") is False
    assert "one.png" not in drawn


def test_lambda_sweep_ours_and_the_papers_in_separate_panels_away_from_paper_scale(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault(path.name, fig))
    rows = [
        {"id": f"w{w}", "label": f"lambda = {w}", "group": "1a", "loss": {"sar": True, "weight": w}}
        | {"paper": {"top1": 75.7 + w}}
        for w in (0.001, 0.01, 0.1)
    ]
    records = [
        _record(f"w{w}", s, metrics={"top1": 19.0 + s + w}) for w in (0.001, 0.01, 0.1) for s in (0, 1)
    ]
    for scale, panels in (("local", 2), ("paper", 1)):
        recipe = _recipe(rows, ["top1"], scale)
        recipe.lambda_sweep = "1a"
        assert figures.lambda_sweep(recipe, cells(recipe, records), tmp_path / f"{scale}.png", scale)
        assert len(drawn[f"{scale}.png"].axes) == panels
    paper, ours = drawn["local.png"].axes
    assert paper.get_title() == "the paper's" and "ours, local scale" in ours.get_title()
    assert paper.get_ylim()[0] > 70 and ours.get_ylim()[1] < 30  # each on its own axis


def test_outline_of_the_kept_patches():
    picture = np.zeros((16, 16, 3))
    one = np.array([[True, False], [False, False]])
    assert sorted(map(tuple, map(tuple, attention._outline(one, picture)))) == sorted(
        [
            ((-0.5, -0.5), (7.5, -0.5)),
            ((-0.5, 7.5), (7.5, 7.5)),
            ((-0.5, -0.5), (-0.5, 7.5)),
            ((7.5, -0.5), (7.5, 7.5)),
        ]
    )
    assert len(attention._outline(np.ones((2, 2), bool), picture)) == 8  # the border only


# Tables of other metrics (Tabs. 4, 5, 6): recipes and results built by hand, as the evaluate and finetune
# engines would write them.


def _recipe(rows: list[dict[str, Any]], metrics: list[str], scale: str = "paper") -> DictConfig:
    """A composed recipe of `rows`: a row with a baseline is a SAR row (its last block) unless it says."""
    row_defaults = {"group": "", "column": "", "baseline": None, "loss": {"sar": False, "weight": 0.0}}
    return OmegaConf.create(
        {
            "name": "t",
            "title": "T: a test table",
            "reproduces": "nothing",
            "scale": scale,
            "metrics": metrics,
            "lambda_sweep": None,
            "loss": {},
            "rows": [
                {
                    **row_defaults,
                    "last_block": "sar" if row.get("baseline") else "standard",
                    "paper": {},
                    "paper_points": {},
                    **row,
                }
                for row in rows
            ],
        }
    )


def _record(row: str, seed: int = 0, curve: tuple[dict[str, float], ...] = (), **result: Any) -> RunRecord:
    """A done run whose `Result` has the given fields (no metrics unless given)."""
    done = Result(**{"metrics": {}, **result})
    return RunRecord(f"{row}-{seed}", [row], seed, "done", "", Path("."), done, list(curve))


def _markdown(recipe: DictConfig, records: list[RunRecord], out: Path) -> str:
    write_report(recipe, records, out, tolerance=0.5, recipe_file="t.yaml")
    return (out / f"{report_stem(recipe)}.md").read_text()


TAB5 = [
    {"id": "vit", "label": "ViT-S/16", "paper": {"imagenet_a_top1": 19.2, "mce": 52.8}},
    {
        "id": "sar",
        "label": "ViT-S/16 + SAR",
        "baseline": "vit",
        "paper": {"imagenet_a_top1": 22.39, "mce": 51.6},
    },
    {"id": "tv", "label": "ViT-S/16 + TV", "baseline": "vit"},
]


def test_two_metrics_with_their_directions(tmp_path):
    recipe = _recipe(TAB5, ["imagenet_a_top1", "mce"])
    records = [
        _record("vit", metrics={"imagenet_a_top1": 20.0, "mce": 53.0}, extra=Extra(mce_reference="alexnet")),
        _record("sar", metrics={"imagenet_a_top1": 21.5, "mce": 51.8}, extra=Extra(mce_reference="alexnet")),
        _record("tv", metrics={"imagenet_a_top1": 19.0, "mce": 53.5}, extra=Extra(mce_reference="alexnet")),
    ]
    frame = cells(recipe, records).set_index(["id", "metric"])
    assert frame.loc[("sar", "mce"), "gain"] == pytest.approx(-1.2)
    assert frame.loc[("sar", "mce"), "improved"] is True  # lower is better
    assert frame.loc[("sar", "imagenet_a_top1"), "improved"] is True
    assert frame.loc[("tv", "mce"), "improved"] is False
    assert frame.loc[("vit", "mce"), "improved"] is None  # no baseline
    assert frame.loc[("sar", "mce"), "direction"] == "lower"
    assert frame.loc[("sar", "mce"), "verdict"] == "untested"  # one seed: no spread to judge by
    card = scorecard(frame, tolerance=0.5)
    assert (card.gains_compared, card.gains_clear, card.gains_untested) == (2, 0, 2)
    text = _markdown(recipe, records, tmp_path)
    assert (
        "| Row | IN-A (Acc. ↑) ours | IN-A (Acc. ↑) paper | IN-A (Acc.) Δ "
        "| IN-C (mCE ↓) ours | IN-C (mCE ↓) paper | IN-C (mCE) Δ |"
    ) in text
    # the paper's precision per metric: two decimals for IN-A, one for the mCE (52.8, 51.6, -1.2)
    assert (
        "| ViT-S/16 + SAR | 21.50 (+1.50; 1 seed: untested) | 22.39 (+3.19) | -0.89 "
        "| 51.8 (-1.2; 1 seed: untested) | 51.6 (-1.2) | +0.2 |"
    ) in text
    assert (
        "| ViT-S/16 + TV | 19.00 (-1.00; 1 seed: untested) | - | - | 53.5 (+0.5; 1 seed: untested) | - | - |"
        in (text)
    )
    assert "Ours: one seed per row (no spread, so no verdict on the gains)." in text
    assert "IN-C (mCE ↓) is normalised by AlexNet (Hendrycks & Dietterich)." in text
    html = (tmp_path / "t.html").read_text()
    assert "<td>51.8<br>-1.2<br>1 seed: untested</td>" in html  # a single seed is never coloured
    assert "AlexNet (Hendrycks &amp; Dietterich)" in html  # HTML escapes its text


def test_only_gains_clear_of_the_seeds_noise_are_coloured_and_counted(tmp_path):
    recipe = _recipe(TAB5, ["imagenet_a_top1", "mce"])
    seeds = {"vit": (19.0, 19.5, 20.0), "sar": (22.0, 22.5, 23.0), "tv": (18.5, 19.5, 20.5)}
    records = [
        _record(
            row,
            seed,
            metrics={"imagenet_a_top1": value, "mce": 52.0 + seed},
            extra=Extra(mce_reference="alexnet"),
        )
        for row, values in seeds.items()
        for seed, value in enumerate(values)
    ]
    frame = cells(recipe, records).set_index(["id", "metric"])
    assert frame.loc[("sar", "imagenet_a_top1"), "verdict"] == "clear"  # +3 with a std of 0.5
    assert frame.loc[("tv", "imagenet_a_top1"), "verdict"] == "noise"  # +0 with a std of 1
    assert frame.loc[("sar", "mce"), "verdict"] == "noise"  # the same mCE per seed: p = 1
    card = scorecard(frame.reset_index(), tolerance=0.5)
    assert (card.gains_compared, card.gains_clear, card.gains_same_sign, card.gains_noise) == (2, 1, 1, 1)
    text = _markdown(recipe, records, tmp_path)
    assert "| ViT-S/16 + SAR | 22.50 ± 0.50 (+3.00 [+3.00, +3.00]; clear, paired p<0.001) |" in text
    assert "1 clear of the seeds' noise, 1 of them of the paper's sign; 1 within noise" in text
    assert "Welch's two-sided t-test" in text and "p < 0.05" in text
    html = (tmp_path / "t.html").read_text()
    assert '<td class="better">22.50 ± 0.50<br>+3.00 [+3.00, +3.00]<br>clear, paired p&lt;0.001</td>' in html
    assert "<td>19.50 ± 1.00<br>+0.00 [-1.24, +1.24]<br>within noise, paired p=1.00</td>" in html


def test_welch_verdict_rule():
    from scipy import stats

    a, b = [22.0, 22.5, 23.5], [19.0, 20.5, 20.0]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    p = welch_p(np.mean(a), np.std(a, ddof=1), 3, np.mean(b), np.std(b, ddof=1), 3)
    assert p == pytest.approx(expected, rel=1e-9)
    assert verdict(2.5, p) == "clear" and verdict(2.5, 0.05) == "noise" and verdict(2.5, 0.0499) == "clear"
    assert math.isnan(welch_p(22.0, 0.0, 1, 20.0, 0.5, 3))  # one seed: untested
    assert verdict(2.0, math.nan) == "untested" and verdict(math.nan, 0.01) == ""
    assert welch_p(21.0, 0.0, 3, 20.0, 0.0, 3) == 0.0 and welch_p(20.0, 0.0, 3, 20.0, 0.0, 3) == 1.0
    # the documented threshold: with 3 seeds each and equal spread, about 2.3 standard deviations
    assert welch_p(2.3, 1.0, 3, 0.0, 1.0, 3) < 0.05 < welch_p(2.2, 1.0, 3, 0.0, 1.0, 3)


TAB3 = [
    {"id": f"{name}/{model}", "label": label, "column": column, "group": "3", "paper": {"top1": paper}}
    | ({"baseline": f"{name}/vit", "paper_gain": {"top1": printed}} if model == "sar" else {})
    for name, column, base, sar, printed in (
        ("cars", "Cars", 35.3, 64.65, 29.35),
        ("painting", "Painting", 38.4, 57.11, 18.17),  # 57.11 - 38.4 = 18.71
        ("sketch", "Sketch", 37.2, 62.98, 30.78),  # 62.98 - 37.2 = 25.78
    )
    for model, label, paper in (("vit", "ViT-S/16", base), ("sar", "ViT-S/16 + SAR", sar))
]


def test_the_papers_printed_gains_are_checked_against_its_numbers(tmp_path):
    assert audit(18.17, 57.11, 38.4) == "mismatch" and audit(29.35, 64.65, 35.3) == "ok"
    assert audit(0.1, 98.69, 98.59) == "ok"  # the paper drops trailing zeros: +0.1 for 0.10
    assert audit(-1.2, 51.6, 52.8) == "ok" and audit(0.9, 80.72, 79.8) == "ok"  # rounded to its decimals
    assert audit(0.9, 80.76, 79.8) == "mismatch" and audit(2.5, 76.72, math.nan) == "unchecked"
    assert audit(math.nan, 76.72, 74.22) == ""
    rows = [*TAB3, {"id": "lone", "label": "no baseline", "group": "3b", "paper": {"top1": 1.0}}]
    rows[-1]["paper_gain"] = {"top1": 0.5}
    recipe = _recipe(rows, ["top1"])
    frame = cells(recipe, [])
    assert list(frame["audit"]) == ["", "ok", "", "mismatch", "", "mismatch", "unchecked"]
    text = _markdown(recipe, [], tmp_path)
    assert "| 57.11 (+18.17) ⚠ |" in text and "| 62.98 (+30.78) ⚠ |" in text and "| 64.65 (+29.35) |" in text
    assert "## The paper's arithmetic" in text
    assert (
        "- ⚠ (3) Painting, ViT-S/16 + SAR, Top-1: the paper prints +18.17, but 57.11 - 38.4 = +18.71." in text
    )
    assert (
        "- ⚠ (3) Sketch, ViT-S/16 + SAR, Top-1: the paper prints +30.78, but 62.98 - 37.2 = +25.78." in text
    )
    assert "(3b) no baseline, Top-1: the paper prints +0.5; no baseline value to check it." in text
    assert "2 of the 3 gains it prints do not hold" in text
    html = (tmp_path / "t.html").read_text()
    assert '<td class="audit">57.11 (+18.17) ⚠</td>' in html
    assert json.loads((tmp_path / "t.json").read_text())["arithmetic_flagged"] == 2


def test_the_paper_column_shows_only_the_gains_it_prints(tmp_path):
    rows = [
        {"id": "base", "label": "no SAR", "paper": {"top1": 88.95}},
        {
            "id": "pre",
            "label": "pre",
            "baseline": "base",
            "paper": {"top1": 89.19},
            "paper_gain": {"top1": 0.24},
        },
        {"id": "ft", "label": "ft", "baseline": "base", "paper": {"top1": 88.95}},  # Tab. 4 prints no gain
    ]
    rows[2]["note"] = "the paper prints no gain here"
    text = _markdown(_recipe(rows, ["top1"]), [], tmp_path)
    assert "| pre | not run | 89.19 (+0.24) |" in text and "| ft | not run | 88.95 |" in text
    assert "- ft: the paper prints no gain here" in text  # a row's note, in the notes
    del rows[1]["paper_gain"], rows[2]["note"]  # a recipe that lists none: the paper's two numbers give it
    text = _markdown(_recipe(rows, ["top1"]), [], tmp_path)
    assert "| pre | not run | 89.19 (+0.24) |" in text and "| ft | not run | 88.95 (+0.00) |" in text


def _errors(corruptions: tuple[str, ...], base: float, step: float) -> dict[str, list[float]]:
    return {c: [base + 0.02 * i + step * s for s in range(5)] for i, c in enumerate(corruptions)}


def test_local_mce_is_normalised_by_the_baseline_row(tmp_path):
    lost = [{"id": "lost", "label": "lost", "baseline": "ghost"}, {"id": "ghost", "label": "never run"}]
    recipe = _recipe([*TAB5, *lost], ["mce"], "local")
    vit = [_errors(CORRUPTIONS, 0.30, 0.05), _errors(CORRUPTIONS, 0.34, 0.05)]
    sar = _errors(CORRUPTIONS + EXTRA_CORRUPTIONS, 0.25, 0.04)  # the 4 extra corruptions are not in the mCE
    records = [
        *[_record("vit", seed, metrics={}, extra=Extra(imagenet_c_errors=e)) for seed, e in enumerate(vit)],
        _record("sar", metrics={}, extra=Extra(imagenet_c_errors=sar)),
        _record("lost", metrics={}, extra=Extra(imagenet_c_errors=sar)),
    ]
    # 100 x mean over the 15 corruptions c of sum_s E_sar[c][s] / sum_s R[c][s], R the mean of vit's 2 seeds
    reference = {c: [(vit[0][c][s] + vit[1][c][s]) / 2 for s in range(5)] for c in CORRUPTIONS}
    expected = 100 * sum(sum(sar[c]) / sum(reference[c]) for c in CORRUPTIONS) / 15
    frame = cells(recipe, records).set_index("id")
    assert frame.loc["sar", "mean"] == pytest.approx(expected, rel=1e-12)
    assert expected < 100 and frame.loc["sar", "improved"] is True
    assert frame.loc["vit", "mean"] == pytest.approx(100.0)  # no baseline: its own reference
    assert frame.loc["vit", "n"] == 2 and frame.loc["vit", "std"] > 0
    assert math.isnan(frame.loc["tv", "mean"]) and frame.loc["tv", "state"] == "not run"
    assert frame.loc["lost", "state"] == "unavailable"
    text = _markdown(recipe, records, tmp_path)
    assert "unavailable: the reference row never run has no ImageNet-C errors" in text
    assert (
        "IN-C (mCE ↓) is normalised by the local baseline rows ViT-S/16, never run: there is no AlexNet"
        in text
    )


TAB4 = [
    {"id": f"{model}/{data}", "label": label, "column": column, "group": "4", "paper": {"top1": paper}}
    | ({"baseline": f"vit/{data}"} if model == "sar" else {})
    for data, column, papers in (("c10", "CIFAR-10", (98.5, 98.7)), ("c100", "CIFAR-100", (88.1, 89.1)))
    for (model, label), paper in zip((("vit", "ViT-S/16"), ("sar", "ViT-S/16 + SAR")), papers, strict=True)
]


def test_a_pivoted_group_of_datasets(tmp_path):
    records = [
        _record("vit/c10", metrics={"top1": 98.0, "top5": 99.9}),
        _record("sar/c10", metrics={"top1": 98.5, "top5": 99.9}),
        _record("vit/c100", metrics={"top1": 87.0}),
    ]
    text = _markdown(_recipe(TAB4, ["top1"]), records, tmp_path)
    assert (
        "| Model | CIFAR-10 Top-1 ↑ ours | CIFAR-10 Top-1 ↑ paper | CIFAR-100 Top-1 ↑ ours "
        "| CIFAR-100 Top-1 ↑ paper |"
    ) in text
    assert "| ViT-S/16 + SAR | 98.5 (+0.5; 1 seed: untested) | 98.7 (+0.2) | not run | 89.1 (+1.0) |" in text
    text = _markdown(_recipe(TAB4, ["top1", "top5"]), records, tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| Model"))
    assert header.split(" | ")[1:5] == [
        "CIFAR-10 Top-1 ↑ ours",
        "CIFAR-10 Top-1 ↑ paper",
        "CIFAR-10 Top-5 ↑ ours",
        "CIFAR-10 Top-5 ↑ paper",
    ]
    assert (
        "| ViT-S/16 | 98.0 | 98.5 | 99.90 | - | 87.0 | 88.1 | unavailable: result.json has no 'top5' | - |"
    ) in text


def test_the_report_says_how_void_pixels_entered_the_jaccard(tmp_path):
    recipe = _recipe([{"id": "vit", "label": "ViT-S/16", "paper": {"jaccard": 31.2}}], ["jaccard"])
    assert jaccard_void([]) is None
    excluded = [
        _record("vit", seed, metrics={"jaccard": 30.0}, extra=Extra(jaccard_void="excluded"))
        for seed in (0, 1)
    ]
    assert "Jaccard ↑: VOC's void pixels (label 255) were excluded" in _markdown(recipe, excluded, tmp_path)
    included = _record("vit", 2, metrics={"jaccard": 29.0}, extra=Extra(jaccard_void="included"))
    assert jaccard_void([included]) == "included"
    assert "Jaccard ↑: VOC's void pixels mixed: some runs excluded them" in _markdown(
        recipe, [*excluded, included], tmp_path
    )


def test_figure3_quotes_the_papers_points(tmp_path, monkeypatch):
    rows = [
        {"id": "vit", "label": "ViT-S/16", "paper_points": {300: 79.8}},
        {"id": "sar", "label": "ViT-S/16 + SAR", "paper_points": {250: 79.9, 300: 80.7}},
    ]
    curve = ({"epoch": 1, "val_top1": 10.0}, {"epoch": 2, "val_top1": 20.0})
    drawn = []
    monkeypatch.setattr(matplotlib.axes.Axes, "scatter", lambda ax, x, y, **_: drawn.append((x[0], y[0])))
    assert figures.curves(_recipe(rows, ["top1"]), [_record("vit", curve=curve)], tmp_path / "c.png", "paper")
    assert sorted(drawn) == [(250, 79.9), (300, 79.8), (300, 80.7)]


def test_a_paired_gain_is_judged_on_the_per_seed_differences():
    from scipy import stats

    from harness.report.aggregate import paired

    base = {0: 60.0, 1: 65.0, 2: 70.0}
    sar = {0: 61.0, 1: 66.2, 2: 70.9}
    test = paired(sar, base)
    reference = stats.ttest_rel(list(sar.values()), list(base.values()))
    low, high = reference.confidence_interval(0.95)
    assert test["pairs"] == 3 and test["p"] == pytest.approx(reference.pvalue)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx((low, high))
    assert test["p"] < 0.05 < welch_p(66.03, 4.95, 3, 65.0, 5.0, 3)  # Welch cannot see it through the seeds
    assert paired(sar, {0: 60.0}) == {} and paired(sar, {5: 1.0, 6: 2.0}) == {}  # fewer than 2 shared seeds
    assert paired({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0})["p"] == 1.0


def test_the_detectable_gain_is_detected_with_the_stated_power():
    from harness.report.aggregate import ALPHA, POWER, detectable_gain, sampling_error

    rng = np.random.default_rng(0)
    n, sd = 10, 2.0
    gain = detectable_gain(sd, n)
    d = rng.normal(gain, sd, size=(20_000, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    from scipy import stats

    power = float((np.abs(t) > stats.t.ppf(1 - ALPHA / 2, n - 1)).mean())
    assert abs(power - POWER) < 0.03
    assert math.isnan(detectable_gain(sd, 1))
    assert sampling_error(60.0, 2400) == pytest.approx(100 * math.sqrt(0.6 * 0.4 / 2400))  # 1.0 point
    assert sampling_error(60.0, 2400) <= 1.0 < sampling_error(60.0, 200)


def test_rows_without_shared_seeds_keep_welchs_test(tmp_path):
    recipe = _recipe(TAB5, ["imagenet_a_top1"])
    values = {"vit": {0: 19.0, 1: 19.5, 2: 20.0}, "sar": {3: 22.0, 4: 22.5, 5: 23.0}}
    records = [
        _record(row, seed, metrics={"imagenet_a_top1": value}, extra=Extra(mce_reference="alexnet"))
        for row, by_seed in values.items()
        for seed, value in by_seed.items()
    ]
    cell = cells(recipe, records).set_index(["id", "metric"]).loc[("sar", "imagenet_a_top1")]
    assert cell["test"] == "welch" and math.isnan(cell["ci_low"])
    assert cell["p"] == pytest.approx(welch_p(22.5, 0.5, 3, 19.5, 0.5, 3)) and cell["verdict"] == "clear"
    assert "Welch p=0.002" in formatting.verdict(cell.to_dict())


def test_a_rows_lambda_and_whether_it_is_sar_come_from_the_loss_it_trains_with():
    recipe, _ = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local"])
    rows = cells(recipe, []).drop_duplicates("id").set_index("id")
    assert rows.loc["1a/0.01", "weight"] == 0.01  # `loss: {sar: true}` under the recipe's `loss: {weight}`
    assert rows.loc["1a/0.05", "weight"] == 0.05 and rows.loc["1b/A", "weight"] == 0.0
    recipe, _ = load_recipe(RECIPES_DIR / "table13.yaml", ["scale=local"])
    rows = cells(recipe, []).drop_duplicates("id").set_index("id")
    assert not rows.loc["vit-s-drloc", "sar"] and rows.loc["vit-s-sar", "sar"]  # DRLoc's gain is not SAR's


def test_a_seed_whose_local_job_died_reads_failed_as_status_says(tmp_path):
    import socket
    import subprocess

    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, sar = sorted(_store(recipe, seeds=1), key=lambda r: r.rows)
    (sar.folder / "result.json").unlink()
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid no process has any more: the local job that trained the run was killed
    submitted = {"launcher": "local", "job_id": str(dead.pid), "host": socket.gethostname()}
    (sar.folder / "submitted.json").write_text(json.dumps({**submitted, "submitted_at": 0.0}))
    text = _render(recipe, tmp_path / "reports", seeds=1)
    assert "| ViT-T + SAR | failed: the local job ended without a result (killed?) |" in text
