"""Render one table's report (Markdown + HTML + figures) and the index, with jinja2 templates kept beside
this file. Output depends only on the run store and the recipe: no timestamps, stable ordering."""

import json
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from omegaconf import DictConfig

from harness.recipe import load_recipe
from harness.report import figures, format
from harness.report.aggregate import (
    RunRecord,
    Scorecard,
    cells,
    jaccard_void,
    mce_reference,
    read_run,
    scorecard,
)
from harness.report.attention import attention_figures
from harness.results import atomic_write_text

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
BADGES = {
    "paper": "Scale: paper — the paper's protocol and data",
    "local": "Scale: local — synthetic data, small models: not a reproduction of the paper's numbers",
}
VOID_NOTES = {  # how the runs' Jaccard treated VOC's void pixels (aggregate.jaccard_void)
    "excluded": "VOC's void pixels (label 255) were excluded, our default; SAR's public script counts them "
    "(eval.exclude_void=false does the same).",
    "included": "VOC's void pixels (label 255) were counted, as SAR's public script does "
    "(eval.exclude_void=false).",
    "mixed": "VOC's void pixels mixed: some runs excluded them and some counted them (the cells mix both).",
    "not recorded": "the results do not say whether VOC's void pixels were excluded.",
}


def _entry(text: str, mark: str = "") -> dict[str, str]:
    """A table cell: its text, and a mark the HTML colours (failed, pending, better, worse)."""
    return {"text": text, "mark": mark}


def _ours(cell: dict[str, Any]) -> dict[str, str]:
    text = format.ours(cell)
    if text.startswith("failed"):
        return _entry(text, "failed")
    if text == "not run":
        return _entry(text, "pending")
    if cell["improved"] is None:
        return _entry(text)
    return _entry(text, "better" if cell["improved"] else "worse")


def _flat(part: pd.DataFrame, metrics: list[str], with_diff: bool) -> tuple[list[str], list[list[dict]]]:
    """One line per row, for each metric: ours, the paper's and (at paper scale) the difference."""
    headers = ["Row"]
    for metric in metrics:
        headers += [f"{format.header(metric)} ours", f"{format.header(metric)} paper"]
        headers += [f"{format.name(metric)} Δ"] if with_diff else []
    lines = []
    for _, metric_cells in part.groupby("id", sort=False):
        line = [_entry(metric_cells["label"].iloc[0])]
        for cell in metric_cells.to_dict("records"):
            line += [_ours(cell), _entry(format.paper(cell))]
            line += [_entry(format.diff(cell))] if with_diff else []
        lines.append(line)
    return headers, lines


def _pivoted(
    part: pd.DataFrame, columns: list[str], metrics: list[str]
) -> tuple[list[str], list[list[dict]]]:
    """One line per label, for each of the paper's columns (epochs, datasets) and each metric: ours and
    the paper's."""
    headers = ["Model"] + [
        f"{column} {format.header(metric)} {side}"
        for column in columns
        for metric in metrics
        for side in ("ours", "paper")
    ]
    by_key = {(c["label"], c["column"], c["metric"]): c for c in part.to_dict("records")}
    lines = []
    for label in dict.fromkeys(part["label"]):
        line = [_entry(label)]
        for column in columns:
            for metric in metrics:
                cell = by_key.get((label, column, metric))
                line += [_ours(cell), _entry(format.paper(cell))] if cell else [_entry("-"), _entry("-")]
        lines.append(line)
    return headers, lines


def _groups(frame: pd.DataFrame, metrics: list[str], scale: str) -> list[dict[str, Any]]:
    """The paper's layout: one table per sub-table; a group with columns (e.g. epochs) is pivoted. The
    difference from the paper is shown at paper scale only: elsewhere it compares different things."""
    groups = []
    for name in dict.fromkeys(frame["group"]):
        part = frame[frame["group"] == name]
        columns = list(dict.fromkeys(c for c in part["column"] if c))
        headers, lines = (
            _pivoted(part, columns, metrics) if columns else _flat(part, metrics, scale == "paper")
        )
        groups.append({"title": f"({name})" if name else "Results", "headers": headers, "lines": lines})
    return groups


def _notes(recipe: DictConfig, records: list[RunRecord]) -> list[str]:
    """What a reader must know to read some columns: what normalised the mCE, how the Jaccard treated
    VOC's void pixels (our default and SAR's public script differ)."""
    notes = []
    if "mce" in recipe.metrics:
        text = f"{format.header('mce')} is normalised by {mce_reference(recipe)}"
        if recipe.scale != "paper":
            text += (
                ": there is no AlexNet at local scale, so each row's errors are divided by its baseline "
                "row's (mean over that row's seeds); a row without a baseline is its own reference (100)"
            )
        notes.append(text + ".")
    void = jaccard_void(records) if "jaccard" in recipe.metrics else None
    if void:
        notes.append(f"{format.header('jaccard')}: " + VOID_NOTES.get(void, f"VOC's void pixels: {void}."))
    return notes


def _provenance(records: list[RunRecord]) -> dict[str, Any]:
    results = [r.result for r in records if r.result is not None]
    prov = [r["provenance"] for r in results if r.get("provenance")]
    packages = sorted({f"{k} {v}" for p in prov for k, v in p.get("packages", {}).items() if v})
    hardware = sorted({f"{p.get('host')} ({p.get('gpu') or 'CPU'} x{p.get('world_size')})" for p in prov})
    return {
        "runs": len(records),
        "done": len(results),
        "gpu_hours": sum(r.get("gpu_hours", 0.0) for r in results),
        "wall_hours": sum(r.get("wall_time_s", 0.0) for r in results) / 3600,
        "commits": sorted({(p.get("git_commit") or "?")[:10] for p in prov}),
        "dirty": any(p.get("git_dirty") for p in prov),
        "packages": packages,
        "hardware": hardware,
    }


def _figures(
    recipe: DictConfig, records: list[RunRecord], frame: pd.DataFrame, out: Path, attention_files: list[str]
) -> list[dict[str, str]]:
    """Draw the curves and the lambda sweep; the files and captions of those drawn and the attention maps."""
    scale, stem = recipe.scale, report_stem(recipe)
    shown = []
    if figures.curves(recipe, records, out / "figures" / f"{stem}_curves.png", scale):
        caption = f"Validation top-1 against epochs ({scale} scale)"
        shown.append({"file": f"{stem}_curves.png", "caption": caption})
    if recipe.lambda_sweep and figures.lambda_sweep(
        recipe, frame, out / "figures" / f"{stem}_lambda.png", scale
    ):
        caption = f"{format.name(recipe.metrics[0])} against lambda ({scale} scale)"
        shown.append({"file": f"{stem}_lambda.png", "caption": caption})
    for file in attention_files:
        what = "60% of the mass kept" if "thresholded" in file else "every head's last-block [CLS] attention"
        shown.append({"file": file, "caption": f"Attention maps, {what} ({scale} scale)"})
    return shown


def report_stem(recipe: DictConfig) -> str:
    """The reports' file name: the recipe's name, with the scale unless it is the paper's."""
    return recipe.name if recipe.scale == "paper" else f"{recipe.name}-{recipe.scale}"


def render_table(
    recipe_path: str | Path, overrides: list[str], out: Path, tolerance: float
) -> dict[str, Any]:
    """Write out/<name>.md, out/<name>.html and figures; returns the summary the index is built from."""
    recipe, runs = load_recipe(recipe_path, overrides)
    records = [read_run(run) for run in runs]
    attention = attention_figures(recipe, runs, out, report_stem(recipe))
    return write_report(recipe, records, out, tolerance, str(recipe_path), attention)


def write_report(
    recipe: DictConfig,
    records: list[RunRecord],
    out: Path,
    tolerance: float,
    recipe_file: str,
    attention: tuple[list[str], list[str]] = ([], []),
) -> dict[str, Any]:
    """Write the reports of a recipe's runs, already read (`attention`: the files of the attention figures
    already drawn, and the problems met drawing them); returns the summary the index is built from. Apart
    from `render_table` so that records built elsewhere (tests, other stores) can be reported."""
    frame = cells(recipe, records)
    card = scorecard(frame, tolerance)
    scale, stem = recipe.scale, report_stem(recipe)
    attention_files, attention_problems = attention
    context = {
        "title": recipe.title,
        "reproduces": recipe.reproduces,
        "recipe_file": recipe_file,
        "scale": scale,
        "badge": BADGES[scale],
        "card": card,
        "groups": _groups(frame, list(recipe.metrics), scale),
        "notes": _notes(recipe, records),
        "figures": _figures(recipe, records, frame, out, attention_files),
        "problems": [f"{r.uid}: {p}" for r in records for p in r.problems] + attention_problems,
        "provenance": _provenance(records),
    }
    for suffix in ("md", "html"):
        text = TEMPLATES.get_template(f"table.{suffix}.j2").render(**context)
        atomic_write_text(out / f"{stem}.{suffix}", text)
    summary = _summary(stem, recipe, card, context["provenance"])
    atomic_write_text(out / f"{stem}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _summary(stem: str, recipe: DictConfig, card: Scorecard, provenance: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": stem,
        "title": recipe.title,
        "scale": recipe.scale,
        "runs": provenance["runs"],
        "done": provenance["done"],
        "compared": card.cells_compared,
        "within": card.within_tolerance,
        "gains": card.gains_compared,
        "same_sign": card.gains_same_sign,
        "gpu_hours": provenance["gpu_hours"],
    }


def render_index(out: Path) -> None:
    """reports/index.html from the summaries of every report in `out`."""
    entries = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    html = TEMPLATES.get_template("index.html.j2").render(
        entries=entries, total_gpu_hours=sum(e["gpu_hours"] for e in entries)
    )
    atomic_write_text(out / "index.html", html)
