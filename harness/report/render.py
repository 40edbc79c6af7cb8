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
from harness.report.aggregate import RunRecord, Scorecard, cells, read_run, scorecard
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


def _groups(frame: pd.DataFrame, scale: str) -> list[dict[str, Any]]:
    """The paper's layout: one table per sub-table; a group with columns (e.g. epochs) is pivoted. The
    difference from the paper is shown at paper scale only: elsewhere it compares different things."""
    groups = []
    for name in dict.fromkeys(frame["group"]):
        part = frame[frame["group"] == name]
        columns = list(dict.fromkeys(c for c in part["column"] if c))
        if columns:
            headers = ["Model"] + [f"{c} {side}" for c in columns for side in ("ours", "paper")]
            lines = []
            for label in dict.fromkeys(part["label"]):
                line = [label]
                for column in columns:
                    match = part[(part["label"] == label) & (part["column"] == column)]
                    cell = match.iloc[0].to_dict() if len(match) else None
                    line += [format.ours(cell), format.paper(cell)] if cell else ["-", "-"]
                lines.append(line)
        else:
            with_diff = scale == "paper"
            headers = ["Row", "Ours", "Paper", *(["Δ"] if with_diff else [])]
            lines = [
                [c["label"], format.ours(c), format.paper(c), *([format.diff(c)] if with_diff else [])]
                for c in part.to_dict("records")
            ]
        groups.append({"title": f"({name})" if name else "Results", "headers": headers, "lines": lines})
    return groups


def _provenance(records: list[RunRecord]) -> dict[str, Any]:
    results = [r.result for r in records if r.result is not None]
    prov = [r.get("provenance", {}) for r in results]
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


def render_table(
    recipe_path: str | Path, overrides: list[str], out: Path, tolerance: float
) -> dict[str, Any]:
    """Write out/<name>.md, out/<name>.html and figures; returns the summary the index is built from."""
    recipe, runs = load_recipe(recipe_path, overrides)
    records = [read_run(run) for run in runs]
    frame = cells(recipe, records)
    card = scorecard(frame, tolerance)
    name, scale = recipe.name, recipe.scale
    stem = f"{name}" if scale == "paper" else f"{name}-{scale}"
    shown = []
    if figures.curves(recipe, records, out / "figures" / f"{stem}_curves.png", scale):
        shown.append(
            {"file": f"{stem}_curves.png", "caption": f"Validation top-1 against epochs ({scale} scale)"}
        )
    if recipe.lambda_sweep and figures.lambda_sweep(
        recipe, frame, out / "figures" / f"{stem}_lambda.png", scale
    ):
        shown.append({"file": f"{stem}_lambda.png", "caption": f"Top-1 against lambda ({scale} scale)"})
    attention_files, attention_problems = attention_figures(recipe, runs, out, stem)
    for file in attention_files:
        what = "60% of the mass kept" if "thresholded" in file else "every head's last-block [CLS] attention"
        shown.append({"file": file, "caption": f"Attention maps, {what} ({scale} scale)"})
    context = {
        "title": recipe.title,
        "reproduces": recipe.reproduces,
        "recipe_file": str(recipe_path),
        "scale": scale,
        "badge": BADGES[scale],
        "card": card,
        "groups": _groups(frame, scale),
        "figures": shown,
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
