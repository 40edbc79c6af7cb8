"""Reports: golden Markdown for a run store built here, scorecard and gain arithmetic, broken run folders,
HTML that parses and links only to files that exist, and byte-identical regeneration."""

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from omegaconf import OmegaConf

from harness.eval import keep_mass
from harness.recipe import load_recipe
from harness.report import format
from harness.report.aggregate import scorecard
from harness.report.render import render_index, render_table
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
            "final_top1": top1,
            "best_top1": top1,
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
    (sar.folder / "result.json").write_text('{"final_top1": 4')  # half-written
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
