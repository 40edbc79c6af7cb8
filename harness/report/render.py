"""Render one table's report (Markdown + HTML + figures) and the index, with jinja2 templates kept beside
this file. Output depends only on the run store and the recipe: no timestamps, stable ordering."""

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from omegaconf import DictConfig

from harness.config import PROJECT_DIR, RecipeError
from harness.lifecycle import run_states
from harness.recipe import load_recipe
from harness.records import COUNT, NUMBER, TEXT, Kind, Spec, decode, read_text
from harness.report import figures, formatting
from harness.report.aggregate import (
    ALPHA,
    POWER,
    VERDICT_RULE,
    RunRecord,
    Scorecard,
    arithmetic,
    cells,
    jaccard_void,
    mce_reference,
    power,
    read_run,
    results,
    scorecard,
)
from harness.report.attention import attention_figures
from harness.results import atomic_write_text
from harness.rows import select_rows

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=lambda name: (name or "").endswith(".html.j2"),  # HTML escapes its text; Markdown does not
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


def _entry(text: str, mark: str = "", lines: list[str] | None = None) -> dict[str, Any]:
    """A table cell: its text (Markdown), its lines (HTML), and a mark the HTML colours (failed, pending,
    better, worse, audit)."""
    return {"text": text, "mark": mark, "lines": lines or [text]}


def _ours(cell: dict[str, Any]) -> dict[str, Any]:
    """Ours at the final epoch, its gain and its verdict each on a line of its own in HTML (a pivoted table
    of four columns then fits a page): coloured better or worse only where the seeds separate it from its
    baseline row (`verdict` clear)."""
    text, (value, gain) = formatting.ours(cell), formatting.ours_parts(cell)
    lines = [value, *gain.split("; ", 1)] if gain else [value]
    if text.startswith("failed"):
        return _entry(text, "failed", lines)
    if text == "not run":
        return _entry(text, "pending", lines)
    if cell["improved"] is None or cell["verdict"] != "clear":
        return _entry(text, "", lines)
    return _entry(text, "better" if cell["improved"] else "worse", lines)


def _sides(cell: dict[str, Any] | None, best: bool, with_diff: bool) -> list[dict[str, str]]:
    """A cell's entries: ours (final), ours at the best epoch or iteration, the paper's, the difference."""
    if cell is None:
        return [_entry("-")] * (2 + best + with_diff)
    entries = [_ours(cell)] + ([_entry(formatting.best(cell))] if best else [])
    entries.append(_entry(formatting.paper(cell), "audit" if cell["audit"] == "mismatch" else ""))
    return entries + ([_entry(formatting.diff(cell))] if with_diff else [])


def _headers(
    metric: str, best: bool, with_diff: bool, top: str = "", trained: str = "", step: str = "epoch"
) -> list[tuple[str, str]]:
    """(the paper's column or "", header): `Top-1 ↑ ours (final epoch)`, `Top-1 ↑ ours (best epoch)`,
    `Top-1 ↑ paper`, `Top-1 Δ` (`step`: iteration for a segmentation's mIoU)."""
    head = formatting.header(metric)
    said = "; ".join(([f"local: {trained}"] if trained else []) + ([f"final {step}"] if best else []))
    headers = [f"{head} ours" + (f" ({said})" if said else "")]
    headers += [f"{head} ours (best {step})"] if best else []
    headers += [f"{head} paper"] + ([f"{formatting.name(metric)} Δ"] if with_diff else [])
    return [(top, h) for h in headers]


def _header_rows(headers: list[tuple[str, str]]) -> list[list[dict[str, Any]]]:
    """The HTML header: one row, or two when headers fall under the paper's columns (`100 ep.` over its
    ours and paper), each top spanning its columns."""
    if not any(top for top, _ in headers):
        return [[{"text": text, "span": ""} for _, text in headers]]
    first, second = [], []
    for top, text in headers:
        if not top:
            first.append({"text": text, "span": ' rowspan="2"'})
            continue
        if first and first[-1].get("top") == top:
            first[-1]["count"] += 1
        else:
            first.append({"text": top, "top": top, "count": 1})
        second.append({"text": text, "span": ""})
    for cell in first:
        if "count" in cell:
            cell["span"] = f' colspan="{cell["count"]}"'
    return [first, second]


PARTS = ("arch", "schedule")  # what was trained, in words: the model as built, the epochs


def _single(values: pd.Series) -> str:
    """The one value a column of descriptions has, else ""."""
    found = set(values)
    return found.pop() if len(found) == 1 else ""


def _suffixed(label: str, parts: list[str]) -> str:
    parts = [p for p in dict.fromkeys(parts) if p]
    return f"{label} (local: {', '.join(parts)})" if parts else label


def _about(part: pd.DataFrame, common: dict[str, str], scale: str) -> str:
    """The sentence under a sub-table's title: how many seeds make ours, and away from paper scale what
    its rows have in common as trained (what differs is in the row labels or column headers)."""
    seeds = int(part["group_seeds"].iloc[0])
    counted = (
        f"the mean ± std over {seeds} seeds"
        if seeds > 1
        else "one seed per row (no spread, so no verdict on the gains)"
    )
    if scale == "paper":
        return f"Ours: {counted}." if seeds else ""
    data = [d for d in dict.fromkeys(part["data"]) if d]
    said = [common[k] for k in PARTS if common.get(k)] + ([f"on {'; '.join(data)}"] if data else [])
    trained = f"Ours, as trained at {scale} scale: {'; '.join(said)}." if said else ""
    return " ".join(t for t in (trained, f"Ours: {counted}." if seeds else "") if t)


def _detectable(part: pd.DataFrame, metrics: list[str]) -> str:
    """Per metric with gains tested in pairs, the smallest gain the sub-table's seeds could detect beside
    the paper's gains, and for top-1 the sampling error of one run's value (`aggregate.power`)."""
    said = []
    for metric in metrics:
        found = power(part, metric)
        if found is None:
            continue
        digits = int(part.loc[part["metric"] == metric, "digits"].iloc[0])
        text = (
            f"Detectable here: a gain in {formatting.name(metric)} of {found['detectable']:.{digits}f} "
            f"points or more ({found['pairs']} paired seeds whose differences spread by "
            f"{found['diff_sd']:.{digits}f}; "
            f"two-sided level {ALPHA:g}, power {POWER:g})"
        )
        if span := formatting.gain_span(found["paper_low"], found["paper_high"]):
            text += f"; the paper's gains here: {span}"
        if not math.isnan(found["sampling_error"]):
            images, error = found["val_images"], found["sampling_error"]
            text += f". One run's top-1 on its {images:,} validation images has a sampling error of "
            text += f"{error:.1f} points"
        said.append(text + ".")
    return " ".join(said)


def _first_header(name: str, arch: str, scale: str) -> str:
    """`Row`, or away from paper scale `Row (as trained: 4 blocks, 144 wide, 6 heads, 64 px)` where the
    sub-table's rows share their model as built: the paper's names in the rows are not what was trained."""
    return f"{name} (as trained: {arch})" if scale != "paper" and arch else name


def _flat(
    part: pd.DataFrame,
    metrics: list[str],
    best: dict[str, bool],
    step: dict[str, str],
    with_diff: bool,
    varying: list[str],
    first: str,
):
    """One line per row, for each metric: ours, ours at the best epoch, the paper's and (at paper scale)
    the difference."""
    headers = [("", first)] + [h for m in metrics for h in _headers(m, best[m], with_diff, step=step[m])]
    lines = []
    for _, row_cells in part.groupby("id", sort=False):
        first = row_cells.iloc[0]
        line = [_entry(_suffixed(first["label"], [first[k] for k in varying]))]
        by_metric = {c["metric"]: c for c in row_cells.to_dict("records")}
        for metric in metrics:
            line += _sides(by_metric.get(metric), best[metric], with_diff)
        lines.append(line)
    return headers, lines


def _pivoted(
    part: pd.DataFrame,
    columns: list[str],
    metrics: list[str],
    best: dict[str, bool],
    step: dict[str, str],
    varying,
    first: str,
):
    """One line per label, for each of the paper's columns (epochs, datasets) and each metric: ours and
    the paper's. What was trained goes to a column's header where it is the same down the column (the
    epochs of Tab. 1c), else to the row's label."""
    by_column = {k: all(_single(part[part["column"] == c][k]) for c in columns) for k in varying}
    headers = [("", first)]
    for column in columns:
        trained = ", ".join(_single(part[part["column"] == column][k]) for k in varying if by_column[k])
        for metric in metrics:
            headers += _headers(metric, best[metric], False, column, trained, step[metric])
    by_key = {(c["label"], c["column"], c["metric"]): c for c in part.to_dict("records")}
    lines = []
    for label in dict.fromkeys(part["label"]):
        mine = part[part["label"] == label]
        line = [_entry(_suffixed(label, [v for k in varying if not by_column[k] for v in mine[k]]))]
        for column in columns:
            for metric in metrics:
                line += _sides(by_key.get((label, column, metric)), best[metric], False)
        lines.append(line)
    return headers, lines


def _step(part: pd.DataFrame) -> str:
    """What the cells' final and best values are of: "epoch", "iteration", or "epoch or iteration"."""
    steps = sorted(set(part["step"]))
    return " or ".join(steps) if steps else "epoch"


def _measured(part: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The metrics a sub-table shows: those its rows have a paper value or a result for (Tab. 9a's probes
    have no Jaccard, 9b's evaluations no top-1)."""
    shown = [m for m in metrics if (part.loc[part["metric"] == m, ["paper", "mean"]].notna()).any(axis=None)]
    return shown or metrics


def _groups(frame: pd.DataFrame, all_metrics: list[str], scale: str) -> list[dict[str, Any]]:
    """The paper's layout: one table per sub-table with the metrics it measures; a group with columns
    (e.g. epochs) is pivoted. The difference from the paper is shown at paper scale only: elsewhere it
    compares different things. Away from paper scale, what was trained is said: once for the sub-table, or
    per row or column where it differs."""
    groups = []
    for name in dict.fromkeys(frame["group"]):
        part = frame[frame["group"] == name]
        part = part.assign(group_seeds=int(part["seeds"].max()))  # the count each cell need not repeat
        columns = list(dict.fromkeys(c for c in part["column"] if c))
        metrics = _measured(part, all_metrics)
        best = {m: bool((part.loc[part["metric"] == m, "best_n"] > 0).any()) for m in metrics}
        step = {m: _step(part[part["metric"] == m]) for m in metrics}
        common = {k: _single(part[k]) for k in PARTS}
        varying = [k for k in PARTS if not common[k] and part[k].ne("").any()]
        if columns:
            first = _first_header("Model", common["arch"], scale)
            headers, lines = _pivoted(part, columns, metrics, best, step, varying, first)
        else:
            first = _first_header("Row", common["arch"], scale)
            headers, lines = _flat(part, metrics, best, step, scale == "paper", varying, first)
        groups.append(
            {
                "title": f"({name})" if name else "Results",
                "about": " ".join(t for t in (_about(part, common, scale), _detectable(part, metrics)) if t),
                "headers": [f"{top} {text}" if top else text for top, text in headers],
                "header_rows": _header_rows(headers),
                "lines": lines,
            }
        )
    return groups


def _notes(recipe: DictConfig, records: list[RunRecord], frame: pd.DataFrame) -> list[str]:
    """What a reader must know to read some columns: the recipe rows' notes, final and best epochs, the
    precision, what normalised the mCE, how the Jaccard treated VOC's void pixels (our default and SAR's
    public script differ)."""
    notes = []
    for cell in frame.drop_duplicates("id").to_dict("records"):  # what the recipe says beside a row
        if cell["note"]:
            where = f"({cell['group']}) {cell['label']}" if cell["group"] else cell["label"]
            where += f" ({cell['column']})" if cell["column"] else ""
            notes.append(f"{where}: {cell['note']}")
    if (frame["best_n"] > 0).any():
        step = _step(frame[frame["best_n"] > 0])
        notes.append(
            f"Ours (final {step}) is the value at the last {step}, the one the gains and verdicts use; ours "
            f"(best {step}) is the best over the validated {step}s, picked on the same validation images, so "
            "it flatters. The paper does not say which of the two it prints (SAR's code keeps the checkpoint "
            "of the best validation top-1)."
        )
    notes.append(
        "Ours are written with as many decimals as the paper prints in that sub-table and metric; the "
        "paper's numbers and gains as it prints them (a gain the paper does not print is the difference of "
        "its two numbers)."
    )
    if "mce" in recipe.metrics:
        text = f"{formatting.header('mce')} is normalised by {mce_reference(recipe)}"
        if recipe.scale != "paper":
            text += (
                ": there is no AlexNet at local scale, so each row's errors are divided by its baseline "
                "row's (mean over that row's seeds); a row without a baseline is its own reference (100)"
            )
        notes.append(text + ".")
    void = jaccard_void(records) if "jaccard" in recipe.metrics else None
    if void:
        said = VOID_NOTES.get(void, f"VOC's void pixels: {void}.")
        notes.append(f"{formatting.header('jaccard')}: {said}")
    return notes


def _where(cell: dict[str, Any]) -> str:
    """`(1b) B: A + no MSA skip connections, Top-1` or `CIFAR-10, SAR in fine-tuning, Top-1`."""
    text = ", ".join(w for w in (cell["column"], cell["label"], formatting.name(cell["metric"])) if w)
    return f"({cell['group']}) {text}" if cell["group"] else text


def _scorecard(card: Scorecard, scale: str) -> list[str]:
    """The scorecard in sentences: closeness (paper scale only), the gains counted where the seeds
    separate the rows, the rule that decides it, and the paper's arithmetic."""
    close = f"{card.within_tolerance} of {card.cells_compared} cells within {card.tolerance:g} points"
    lines = [
        (
            f"{close} of the paper."
            if card.cells_compared
            else "No cell of ours to compare with the paper yet."
        )
        if scale == "paper"
        else f"Closeness to the paper's values is not scored at {scale} scale (different data, models and "
        "epochs)."
    ]
    if card.gains_compared:
        same = f"{card.gains_same_sign} of them of the paper's sign"
        clear = (
            f"{card.gains_clear} clear of the seeds' noise, {same}"
            if card.gains_clear
            else "none clear of the seeds' noise"
        )
        lines.append(
            f"SAR's gain over the baseline row, in the {card.gains_compared} cell(s) where the paper has "
            f"one: {clear}; {card.gains_noise} within noise; {card.gains_untested} untested (a single seed)."
        )
    else:
        lines.append("No gain over a baseline row to compare with the paper's yet.")
    lines.append(VERDICT_RULE)
    if card.arithmetic_flagged:
        lines.append(
            f"The paper's arithmetic: {card.arithmetic_flagged} of the {card.arithmetic_checked} gains it "
            f"prints do not hold ({formatting.AUDIT_MARK}, listed below)."
        )
    return lines


def _arithmetic(frame: pd.DataFrame, card: Scorecard) -> dict[str, Any] | None:
    """The paper's printed gains checked against its two numbers; None when the recipe lists none."""
    if not frame["audit"].ne("").any():
        return None
    flagged, unchecked = [], []
    for cell in arithmetic(frame):
        printed = formatting.gain(cell["printed_gain"])
        if cell["audit"] == "mismatch":
            base = formatting.number(cell["paper_base"])
            should = formatting.signed(float(cell["difference"]), cell["gain_digits"])
            flagged.append(
                f"{_where(cell)}: the paper prints {printed}, but "
                f"{formatting.number(cell['paper'])} - {base} = {should}."
            )
        else:
            unchecked.append(f"{_where(cell)}: the paper prints {printed}; no baseline value to check it.")
    rule = "to half a unit of the printed gain's last decimal"
    summary = (
        f"Of the {card.arithmetic_checked} gain(s) the paper prints beside a number and its baseline, "
        f"{len(flagged)} do not equal the difference of the two numbers ({rule}); "
        f"{formatting.AUDIT_MARK} marks them in the tables."
        if flagged
        else f"All {card.arithmetic_checked} gain(s) the paper prints beside a number and its baseline equal "
        f"the difference of the two numbers ({rule})."
    )
    return {"summary": summary, "flagged": flagged, "unchecked": unchecked, "mark": formatting.AUDIT_MARK}


def _provenance(records: list[RunRecord]) -> dict[str, Any]:
    done = results(records)
    prov = [r.provenance for r in done if r.provenance]
    packages = sorted({f"{k} {v}" for p in prov for k, v in p.get("packages", {}).items() if v})
    hardware = sorted({f"{p.get('host')} ({p.get('gpu') or 'CPU'} x{p.get('world_size')})" for p in prov})
    return {
        "runs": len(records),
        "done": len(done),
        "gpu_hours": sum(r.gpu_hours for r in done),
        "wall_time": formatting.duration(sum(r.wall_time_s for r in done)),
        "commits": sorted({(p.get("git_commit") or "?")[:10] for p in prov}),
        "dirty": any(p.get("git_dirty") for p in prov),
        "packages": packages,
        "hardware": hardware,
    }


def _figures(
    recipe: DictConfig,
    records: list[RunRecord],
    frame: pd.DataFrame,
    out: Path,
    attention_files: list[dict[str, str]],
    stem: str,
) -> list[dict[str, str]]:
    """Draw the curves and the lambda sweep; the files and captions of those drawn and the attention maps."""
    scale = recipe.scale
    trained = "" if scale == "paper" else f"; {scale} scale, the epochs as trained"
    shown = []
    if figures.curves(recipe, records, out / "figures" / f"{stem}_curves.png", scale):
        caption = (
            "Validation top-1 against epochs, one panel per sub-table: the mean over the seeds, the band "
            f"± 1 std{trained}"
        )
        if scale == "paper" and any(row.paper_points for row in recipe.rows):
            caption += "; stars: the points the paper quotes"
        shown.append({"file": f"{stem}_curves.png", "caption": caption})
    if recipe.lambda_sweep and figures.lambda_sweep(
        recipe, frame, out / "figures" / f"{stem}_lambda.png", scale
    ):
        metric = formatting.name(recipe.metrics[0])
        caption = (
            f"{metric} against lambda, the paper's and ours in one plot"
            if scale == "paper"
            else f"{metric} against lambda: the paper's (left) and ours at {scale} scale (right), each on "
            "its own axis: the two are not comparable"
        )
        shown.append({"file": f"{stem}_lambda.png", "caption": caption})
    return shown + attention_files


def report_stem(recipe: DictConfig, rows: list[str] | None = None) -> str:
    """The reports' file name: the recipe's name, with the scale unless it is the paper's, and for a subset
    of its rows (`--rows`) their ids, so that it does not overwrite the whole table's (`-rows-1b_A+1b_F`)."""
    stem = recipe.name if recipe.scale == "paper" else f"{recipe.name}-{recipe.scale}"
    if rows is None:
        return stem
    ids = "+".join(re.sub(r"[^A-Za-z0-9._-]", "_", row_id) for row_id in rows)
    return f"{stem}-rows-{ids if len(ids) <= 80 else hashlib.sha256(ids.encode()).hexdigest()[:12]}"


def shown_path(path: str | Path) -> str:
    """How a report names its recipe: relative to the project (`recipes/table1.yaml`) however it was given
    (`--all` finds recipes by absolute path), else by its file name: no absolute path in a report."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(PROJECT_DIR) if resolved.is_relative_to(PROJECT_DIR) else resolved.name)


def _local_pointer(
    recipe: DictConfig, runs: list, recipe_path: str | Path, overrides: list[str], rows: list[str] | None
) -> dict[str, str] | None:
    """When no run of a paper-scale report is in the run store but some local-scale ones are: what to type
    to report them (text, command, file)."""
    if recipe.scale != "paper" or any(run.folder.exists() for run in runs):
        return None
    kept = [o for o in overrides if not o.lstrip("+~").startswith("scale=")]
    try:
        local_recipe, local_runs = load_recipe(recipe_path, [*kept, "scale=local"])
        if rows is not None:
            local_recipe, local_runs = select_rows(local_recipe, local_runs, rows, recipe_path)
    except RecipeError:
        return None
    found = [run for run in local_runs if run.folder.exists()]
    if not found:
        return None
    done = sum((run.folder / "result.json").exists() for run in found)
    return {
        "text": f"No run of this recipe at paper scale is in the run store, but {len(found)} local-scale "
        f"run(s) are ({done} done).",
        "command": " ".join(
            [
                "python -m harness report",
                shown_path(recipe_path),
                *kept,
                "scale=local",
                *(["--rows", ",".join(rows)] if rows is not None else []),
            ]
        ),
        "file": f"{report_stem(local_recipe, rows)}.html",
    }


def read_table(
    recipe_path: str | Path, overrides: list[str], rows: list[str] | None = None
) -> tuple[DictConfig, list, list[RunRecord]]:
    """A recipe (only `rows` and their baselines, when given), its runs and what the run store holds of
    each, in the states `status` gives them (the scheduler asked once)."""
    recipe, runs = load_recipe(recipe_path, overrides)
    if rows is not None:
        recipe, runs = select_rows(recipe, runs, rows, recipe_path)
    described: dict[tuple[int, int], dict[str, Any]] = {}  # runs of a row share their config
    records = []
    for run, state in zip(runs, run_states([run.folder for run in runs]), strict=True):
        key = (id(run.row_config), id(run.upstream.row_config) if run.upstream else 0)
        records.append(read_run(run, described.get(key), state))
        described.setdefault(key, records[-1].trained)
    return recipe, runs, records


def render_table(
    recipe_path: str | Path,
    overrides: list[str],
    out: Path,
    tolerance: float,
    rows: list[str] | None = None,
) -> dict[str, Any]:
    """Write out/<name>.md, out/<name>.html and figures; returns the summary the index is built from.
    `rows`: only these rows of the table and their baselines (harness.rows), the title saying so."""
    recipe, runs, records = read_table(recipe_path, overrides, rows)
    stem = report_stem(recipe, rows)
    attention = attention_figures(recipe, runs, out, stem)
    pointer = _local_pointer(recipe, runs, recipe_path, overrides, rows)
    return write_report(recipe, records, out, tolerance, shown_path(recipe_path), attention, pointer, stem)


def write_report(
    recipe: DictConfig,
    records: list[RunRecord],
    out: Path,
    tolerance: float,
    recipe_file: str,
    attention: tuple[list[dict[str, str]], list[str]] = ([], []),
    pointer: dict[str, str] | None = None,
    stem: str | None = None,
) -> dict[str, Any]:
    """Write the reports of a recipe's runs, already read (`attention`: the attention figures already drawn,
    {file, caption}, and the problems met drawing them; `pointer`: where the runs of another scale are
    reported; `stem`: the file name, `report_stem`'s by default); returns the summary the index is built
    from. Apart from `render_table` so that records built elsewhere (tests, other stores) can be reported."""
    frame = cells(recipe, records)
    card = scorecard(frame, tolerance)
    scale, stem = recipe.scale, stem or report_stem(recipe)
    attention_files, attention_problems = attention
    context = {
        "title": recipe.title,
        "reproduces": recipe.reproduces,
        "recipe_file": recipe_file,
        "scale": scale,
        "badge": BADGES[scale],
        "pointer": pointer,
        "scorecard": _scorecard(card, scale),
        "flagged": card.arithmetic_flagged,
        "groups": _groups(frame, list(recipe.metrics), scale),
        "arithmetic": _arithmetic(frame, card),
        "notes": _notes(recipe, records, frame),
        "figures": _figures(recipe, records, frame, out, attention_files, stem),
        "problems": [f"{r.uid}: {p}" for r in records for p in r.problems] + attention_problems,
        "provenance": _provenance(records),
    }
    for suffix in ("md", "html"):
        text = TEMPLATES.get_template(f"table.{suffix}.j2").render(**context)
        atomic_write_text(out / f"{stem}.{suffix}", text)
    summary = _summary(stem, recipe, card, context["provenance"], pointer or {})
    atomic_write_text(out / f"{stem}.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def _summary(
    stem: str, recipe: DictConfig, card: Scorecard, provenance: dict[str, Any], pointer: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": stem,
        "title": recipe.title,
        "scale": recipe.scale,
        "runs": provenance["runs"],
        "done": provenance["done"],
        "compared": card.cells_compared,
        "within": card.within_tolerance,
        "gains": card.gains_compared,
        "clear_gains": card.gains_clear,
        "same_sign": card.gains_same_sign,
        "noise_gains": card.gains_noise,
        "untested_gains": card.gains_untested,
        "arithmetic_flagged": card.arithmetic_flagged,
        "gpu_hours": provenance["gpu_hours"],
        "pointer": pointer,
    }


# what the index reads of a report's summary (`_summary`); an older version's lack the newer counts
SUMMARY = Spec(
    {
        **dict.fromkeys(("name", "title", "scale"), TEXT),
        **dict.fromkeys(("runs", "done", "compared", "within", "gains", "same_sign"), COUNT),
        "gpu_hours": NUMBER,
        "pointer": Kind(
            lambda value: value == {} or (isinstance(value, dict) and value.keys() >= {"text", "command"}),
            "an object with text and command",
        ),
    },
    required=(
        "name",
        "title",
        "scale",
        "runs",
        "done",
        "compared",
        "within",
        "gains",
        "same_sign",
        "gpu_hours",
    ),
)


def render_index(out: Path) -> list[str]:
    """reports/index.html from the summaries of every report in `out` (those of an older version lack the
    newer counts: `?`); returns the problems of the .json files left out (broken, or not a summary)."""
    older = {"clear_gains": "?", "noise_gains": "?", "untested_gains": "?", "arithmetic_flagged": "?"}
    older["pointer"] = {}
    entries, left_out = [], []
    for path in sorted(out.glob("*.json")):
        text, problem = read_text(path)
        summary, problem = decode(text, SUMMARY, path.name) if text is not None else (None, problem)
        if summary is None:
            left_out.append(problem)
        else:
            entries.append({**older, **summary})
    html = TEMPLATES.get_template("index.html.j2").render(
        entries=entries, total_gpu_hours=sum(e["gpu_hours"] for e in entries), alpha=ALPHA
    )
    atomic_write_text(out / "index.html", html)
    return left_out
