"""Reports: golden Markdown for a run store built here, scorecard and gain arithmetic, broken run folders,
HTML that parses and links only to files that exist, and byte-identical regeneration; tables of other
metrics (two metrics with their directions, the local mCE normalised by the baseline row, a pivoted group
of datasets, the Jaccard's void pixels) and Fig. 3's quoted points."""

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

from harness.eval import CORRUPTIONS, EXTRA_CORRUPTIONS, keep_mass
from harness.recipe import load_recipe
from harness.report import figures, format
from harness.report.aggregate import RunRecord, cells, jaccard_void, scorecard
from harness.report.render import render_index, render_table, report_stem, write_report
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

GOLDEN = Path(__file__).parent / "golden" / "tiny-report.md"


def _store(recipe: Path, seeds: int = 2) -> list:
    """Results for every run of the tiny recipe: base 40 +- seed, sar 45 +- seed."""
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, f"seeds={list(range(seeds))}"])
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
        result = {
            "metrics": {"top1": top1, "top5": 90.0},
            "best": {"top1": top1, "epoch": 3},
            "gpu_hours": 0.0,
            "wall_time_s": 360.0,
            "provenance": provenance,
        }
        (run.folder / "result.json").write_text(json.dumps(result))
    return runs


def _render(recipe: Path, out: Path, seeds: int = 2) -> str:
    render_table(recipe, [*TINY_OVERRIDES, f"seeds={list(range(seeds))}"], out, tolerance=0.5)
    render_index(out)
    return (out / "tiny.md").read_text().replace(str(recipe), "<recipe>")


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


def test_gains_are_written_as_the_paper_writes_them():
    assert [format.gain(v) for v in (2.5, 0.42, -0.46, 4.42, 2.0, 0.0)] == [
        "+2.5",
        "+0.42",
        "-0.46",
        "+4.42",
        "+2",
        "+0",
    ]


def test_scorecard_arithmetic():
    frame = pd.DataFrame(
        {
            "mean": [74.0, 76.9, 80.0, math.nan],
            "paper": [74.22, 76.72, 79.0, 75.0],
            "gain": [math.nan, 2.9, -0.5, math.nan],
            "paper_gain": [math.nan, 2.5, 0.3, 0.8],
        }
    )
    frame["diff"] = frame["mean"] - frame["paper"]
    card = scorecard(frame, tolerance=0.5)
    assert (card.cells_compared, card.within_tolerance) == (3, 2)
    assert (card.gains_compared, card.gains_same_sign) == (2, 1)


def test_broken_run_folders_are_reported_not_fatal(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    base, sar = sorted(_store(recipe, seeds=1), key=lambda r: r.rows)
    with open(base.folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "val_t')  # truncated line
    (base.folder / "checkpoint.pt").write_bytes(b"")
    (sar.folder / "result.json").write_text('{"metrics": {"top1": 4')  # half-written
    text = _render(recipe, tmp_path / "reports", seeds=1)
    assert "metrics.jsonl line 4 is unreadable" in text
    assert "checkpoint.pt is empty" in text
    assert "failed: result.json is unreadable" in text
    (sar.folder / "result.json").unlink()
    (sar.folder / "metrics.jsonl").unlink()
    assert "| ViT-T + SAR | not run | 55 (+5) | - |" in _render(recipe, tmp_path / "reports", seeds=1)


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


def test_attention_maps_of_the_baseline_and_sar_rows(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    runs = _store(recipe, seeds=1)
    _checkpoints(runs)
    text = _render(recipe, tmp_path / "reports", seeds=1)
    for name in ("tiny_attention.png", "tiny_attention_thresholded.png"):
        assert f"figures/{name}" in text and (tmp_path / "reports" / "figures" / name).is_file()
    next(r for r in runs if "sar" in r.rows).folder.joinpath("checkpoint.pt").write_bytes(b"not a checkpoint")
    text = _render(recipe, tmp_path / "reports", seeds=1)
    assert "attention maps: a checkpoint could not be read" in text


def test_report_all_takes_overrides(tmp_path, capsys):
    from harness.cli import main

    assert main(["report", "--all", "scale=local", "--out", str(tmp_path)]) == 0
    for name in ("table1-local", "table2-local", "figure3-local"):
        assert (tmp_path / f"{name}.html").is_file()
    index = (tmp_path / "index.html").read_text()
    assert "table1-local.html" in index and "local" in index


# Tables of other metrics (Tabs. 4, 5, 6): recipes and results built by hand, as the evaluate and finetune
# engines would write them.


def _recipe(rows: list[dict[str, Any]], metrics: list[str], scale: str = "paper") -> DictConfig:
    row_defaults = {"group": "", "column": "", "baseline": None, "loss": {"sar": False, "weight": 0.0}}
    return OmegaConf.create(
        {
            "name": "t",
            "title": "T: a test table",
            "reproduces": "nothing",
            "scale": scale,
            "metrics": metrics,
            "lambda_sweep": None,
            "rows": [{**row_defaults, "paper": {}, "paper_points": {}, **row} for row in rows],
        }
    )


def _record(row: str, seed: int = 0, curve: tuple[dict[str, float], ...] = (), **result: Any) -> RunRecord:
    return RunRecord(f"{row}-{seed}", [row], seed, "done", "", Path("."), result, list(curve))


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
        _record("vit", metrics={"imagenet_a_top1": 20.0, "mce": 53.0}, mce_reference="alexnet"),
        _record("sar", metrics={"imagenet_a_top1": 21.5, "mce": 51.8}, mce_reference="alexnet"),
        _record("tv", metrics={"imagenet_a_top1": 19.0, "mce": 53.5}, mce_reference="alexnet"),
    ]
    frame = cells(recipe, records).set_index(["id", "metric"])
    assert frame.loc[("sar", "mce"), "gain"] == pytest.approx(-1.2)
    assert frame.loc[("sar", "mce"), "improved"] is True  # lower is better
    assert frame.loc[("sar", "imagenet_a_top1"), "improved"] is True
    assert frame.loc[("tv", "mce"), "improved"] is False
    assert frame.loc[("vit", "mce"), "improved"] is None  # no baseline
    assert frame.loc[("sar", "mce"), "direction"] == "lower"
    card = scorecard(frame, tolerance=0.5)
    assert (card.gains_compared, card.gains_same_sign) == (2, 2)  # the paper's gains: +3.19 and -1.2
    text = _markdown(recipe, records, tmp_path)
    assert (
        "| Row | IN-A (Acc. ↑) ours | IN-A (Acc. ↑) paper | IN-A (Acc.) Δ "
        "| IN-C (mCE ↓) ours | IN-C (mCE ↓) paper | IN-C (mCE) Δ |"
    ) in text
    assert (
        "| ViT-S/16 + SAR | 21.50 (n=1) (+1.5) | 22.39 (+3.19) | -0.89 "
        "| 51.80 (n=1) (-1.2) | 51.6 (-1.2) | +0.20 |"
    ) in text
    assert "| ViT-S/16 + TV | 19.00 (n=1) (-1) | - | - | 53.50 (n=1) (+0.5) | - | - |" in text
    assert "IN-C (mCE ↓) is normalised by AlexNet (Hendrycks & Dietterich)." in text
    html = (tmp_path / "t.html").read_text()
    assert '<td class="better">51.80 (n=1) (-1.2)</td>' in html
    assert '<td class="worse">53.50 (n=1) (+0.5)</td>' in html


def _errors(corruptions: tuple[str, ...], base: float, step: float) -> dict[str, list[float]]:
    return {c: [base + 0.02 * i + step * s for s in range(5)] for i, c in enumerate(corruptions)}


def test_local_mce_is_normalised_by_the_baseline_row(tmp_path):
    lost = [{"id": "lost", "label": "lost", "baseline": "ghost"}, {"id": "ghost", "label": "never run"}]
    recipe = _recipe([*TAB5, *lost], ["mce"], "local")
    vit = [_errors(CORRUPTIONS, 0.30, 0.05), _errors(CORRUPTIONS, 0.34, 0.05)]
    sar = _errors(CORRUPTIONS + EXTRA_CORRUPTIONS, 0.25, 0.04)  # the 4 extra corruptions are not in the mCE
    records = [
        *[_record("vit", seed, metrics={}, imagenet_c_errors=e) for seed, e in enumerate(vit)],
        _record("sar", metrics={}, imagenet_c_errors=sar),
        _record("lost", metrics={}, imagenet_c_errors=sar),
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
    assert "| ViT-S/16 + SAR | 98.50 (n=1) (+0.5) | 98.7 (+0.2) | not run | 89.1 (+1) |" in text
    text = _markdown(_recipe(TAB4, ["top1", "top5"]), records, tmp_path)
    header = next(line for line in text.splitlines() if line.startswith("| Model"))
    assert header.split(" | ")[1:5] == [
        "CIFAR-10 Top-1 ↑ ours",
        "CIFAR-10 Top-1 ↑ paper",
        "CIFAR-10 Top-5 ↑ ours",
        "CIFAR-10 Top-5 ↑ paper",
    ]
    assert (
        "| ViT-S/16 | 98.00 (n=1) | 98.5 | 99.90 (n=1) | - "
        "| 87.00 (n=1) | 88.1 | unavailable: result.json has no 'top5' | - |"
    ) in text


def test_the_report_says_how_void_pixels_entered_the_jaccard(tmp_path):
    recipe = _recipe([{"id": "vit", "label": "ViT-S/16", "paper": {"jaccard": 31.2}}], ["jaccard"])
    assert jaccard_void([]) is None
    excluded = [_record("vit", seed, metrics={"jaccard": 30.0}, jaccard_void="excluded") for seed in (0, 1)]
    assert "Jaccard ↑: VOC's void pixels (label 255) were excluded" in _markdown(recipe, excluded, tmp_path)
    included = _record("vit", 2, metrics={"jaccard": 29.0}, jaccard_void="included")
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
