"""Read a table's runs from the run store into one DataFrame of cells, one per (row, metric of the recipe):
ours (mean, std, n over seeds), the paper's value, the difference, and gains over the baseline row. Broken
run folders are reported, never fatal."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from harness.eval import CORRUPTIONS, METRICS, mce
from harness.recipe import ResolvedRun
from harness.results import read_metrics_checked, run_status

ALEXNET = "AlexNet (Hendrycks & Dietterich)"


@dataclass
class RunRecord:
    uid: str
    rows: list[str]
    seed: int
    state: str
    detail: str
    folder: Path
    result: dict[str, Any] | None
    metrics: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)


def read_run(run: ResolvedRun) -> RunRecord:
    folder = run.folder
    status = run_status(folder)
    metrics, problems = read_metrics_checked(folder)
    result = None
    if status.state == "done":
        result = json.loads((folder / "result.json").read_text())
    elif status.state == "failed" and status.detail.startswith("result.json"):
        problems.append(status.detail)
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.exists() and checkpoint.stat().st_size == 0:
        problems.append("checkpoint.pt is empty")
    return RunRecord(
        run.uid, run.rows, run.seed, status.state, status.detail, folder, result, metrics, problems
    )


def _results(records: list[RunRecord]) -> list[dict[str, Any]]:
    return [r.result for r in records if r.result is not None]


def _stored(records: list[RunRecord], metric: str) -> tuple[list[float], str]:
    """The metric as each finished run wrote it, and why some finished runs have no value."""
    results = _results(records)
    values = [r["metrics"][metric] for r in results if metric in r["metrics"]]
    return values, "" if len(values) == len(results) else f"result.json has no {metric!r}"


def _mean_errors(tables: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per corruption and severity, the mean error over seeds (the 15 corruptions of the mCE only)."""
    missing = sorted({c for table in tables for c in CORRUPTIONS if c not in table})
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return {c: np.mean([table[c] for table in tables], axis=0).tolist() for c in CORRUPTIONS}


def _local_mce(records: list[RunRecord], reference: list[RunRecord], label: str) -> tuple[list[float], str]:
    """Each seed's mCE normalised by the reference row's ImageNet-C errors (mean over its seeds): there is
    no AlexNet at local scale, so the baseline row takes its place."""
    results = _results(records)
    if not results:
        return [], ""
    tables = [r["imagenet_c_errors"] for r in _results(reference) if "imagenet_c_errors" in r]
    if not tables:
        return [], f"the reference row {label} has no ImageNet-C errors"
    try:
        base = _mean_errors(tables)
        values = [
            mce({c: r["imagenet_c_errors"][c] for c in CORRUPTIONS if c in r["imagenet_c_errors"]}, base)
            for r in results
            if "imagenet_c_errors" in r
        ]
    except (TypeError, ValueError) as error:
        return [], f"ImageNet-C errors unusable: {error}"
    return values, "" if len(values) == len(results) else "result.json has no imagenet_c_errors"


def _reference_row(row: DictConfig) -> str:
    """The row whose errors normalise a row's local mCE: its baseline, else itself (hence 100)."""
    return row.baseline or row.id


def _values(
    recipe: DictConfig,
    row: DictConfig,
    metric: str,
    by_row: dict[str, list[RunRecord]],
    labels: dict[str, str],
) -> tuple[list[float], str]:
    if metric == "mce" and recipe.scale != "paper":
        reference = _reference_row(row)
        return _local_mce(by_row.get(row.id, []), by_row.get(reference, []), labels[reference])
    return _stored(by_row.get(row.id, []), metric)


def _cell(records: list[RunRecord], values: list[float], missing: str) -> dict[str, Any]:
    """Ours over seeds; `state` names what the seeds without a value are (failed, running, unavailable)."""
    lacking = {r.state for r in records if r.state != "done"} | ({"unavailable"} if missing else set())
    failed = [r.detail for r in records if r.state == "failed"]
    series = pd.Series(values, dtype="float64")
    full = bool(records) and len(values) == len(records)
    return {
        "n": len(values),
        "seeds": len(records),
        "mean": series.mean() if values else math.nan,
        "std": series.std(ddof=1) if len(values) > 1 else (0.0 if values else math.nan),
        "state": "done" if full else "/".join(sorted(lacking)) or "not run",
        "failure": failed[0] if failed else "",
        "missing": missing,
        "running_epochs": max((len(r.metrics) for r in records if r.state == "running"), default=0),
    }


def _improved(metric: str, mean: float, baseline: float) -> bool | None:
    """Whether ours beats the baseline row in the metric's direction (mCE: lower); None without a gain."""
    if math.isnan(mean) or math.isnan(baseline):
        return None
    return METRICS[metric].better(mean, baseline)


def cells(recipe: DictConfig, records: list[RunRecord]) -> pd.DataFrame:
    """One line per (recipe row, metric of `recipe.metrics`): rows in the recipe's order, then metrics.
    Columns: id, group, column, label, baseline, weight, metric, direction, paper, n, seeds, mean, std,
    state, failure, missing, running_epochs, diff, gain, paper_gain, improved."""
    by_row: dict[str, list[RunRecord]] = {}
    for record in records:
        for row_id in record.rows:
            by_row.setdefault(row_id, []).append(record)
    labels = {row.id: row.label for row in recipe.rows}
    lines = []
    for row in recipe.rows:
        for metric in recipe.metrics:
            paper = row.paper.get(metric)
            lines.append(
                {
                    "id": row.id,
                    "group": row.group,
                    "column": row.column,
                    "label": row.label,
                    "baseline": row.baseline,
                    "weight": row.loss.weight if row.loss.sar else 0.0,
                    "metric": metric,
                    "direction": METRICS[metric].direction,
                    "paper": math.nan if paper is None else float(paper),
                    **_cell(by_row.get(row.id, []), *_values(recipe, row, metric, by_row, labels)),
                }
            )
    frame = pd.DataFrame(lines)
    frame["diff"] = frame["mean"] - frame["paper"]
    baseline_mean = _of_baseline(frame, "mean")
    frame["gain"] = frame["mean"] - baseline_mean
    frame["paper_gain"] = frame["paper"] - _of_baseline(frame, "paper")
    improved = map(_improved, frame["metric"], frame["mean"], baseline_mean)
    frame["improved"] = pd.Series(list(improved), index=frame.index, dtype="object")
    return frame


def _of_baseline(frame: pd.DataFrame, column: str) -> pd.Series:
    """Each line's baseline row's value of `column` for the same metric; NaN without a baseline."""
    values = dict(zip(zip(frame["id"], frame["metric"], strict=True), frame[column], strict=True))
    keys = zip(frame["baseline"], frame["metric"], strict=True)
    return pd.Series([values.get(key, math.nan) for key in keys], index=frame.index, dtype="float64")


def mce_reference(recipe: DictConfig) -> str:
    """What normalised the table's mCE column, in words: AlexNet at paper scale, else the baseline rows."""
    if recipe.scale == "paper":
        return ALEXNET
    labels = {row.id: row.label for row in recipe.rows}
    references = list(dict.fromkeys(labels[_reference_row(row)] for row in recipe.rows))
    return f"the local baseline row{'s' if len(references) > 1 else ''} {', '.join(references)}"


def jaccard_void(records: list[RunRecord]) -> str | None:
    """How VOC's void pixels entered the runs' Jaccard: excluded, included, mixed (runs differ) or not
    recorded; None when no run has a Jaccard yet."""
    found = {r.get("jaccard_void") or "not recorded" for r in _results(records) if "jaccard" in r["metrics"]}
    if not found:
        return None
    return found.pop() if len(found) == 1 else "mixed"


@dataclass
class Scorecard:
    cells_compared: int
    within_tolerance: int
    tolerance: float
    gains_compared: int
    gains_same_sign: int


def scorecard(frame: pd.DataFrame, tolerance: float) -> Scorecard:
    """Within `tolerance` points of the paper (meaningful at paper scale), and gains of the paper's sign:
    the sign, not the direction, so a lower mCE counts when the paper's is lower too."""
    compared = frame.dropna(subset=["mean", "paper"])
    gains = frame.dropna(subset=["gain", "paper_gain"])
    same_sign = (gains["gain"] > 0) == (gains["paper_gain"] > 0)
    return Scorecard(
        cells_compared=len(compared),
        within_tolerance=int((compared["diff"].abs() <= tolerance).sum()),
        tolerance=tolerance,
        gains_compared=len(gains),
        gains_same_sign=int(same_sign.sum()),
    )
