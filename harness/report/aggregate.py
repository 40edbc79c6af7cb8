"""Read a table's runs from the run store into one DataFrame of cells: ours (mean, std, n over seeds),
the paper's value, the difference, and gains over the baseline row. Broken run folders are reported,
never fatal."""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from harness.recipe import ResolvedRun
from harness.results import read_metrics_checked, run_status


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
    elif status.state == "failed" and "unreadable" in status.detail:
        problems.append(status.detail)
    checkpoint = folder / "checkpoint.pt"
    if checkpoint.exists() and checkpoint.stat().st_size == 0:
        problems.append("checkpoint.pt is empty")
    return RunRecord(
        run.uid, run.rows, run.seed, status.state, status.detail, folder, result, metrics, problems
    )


def _cell(records: list[RunRecord]) -> dict[str, Any]:
    done = [r.result["final_top1"] for r in records if r.result is not None]
    states = sorted({r.state for r in records})
    failed = [r.detail for r in records if r.state == "failed"]
    series = pd.Series(done, dtype="float64")
    return {
        "n": len(done),
        "seeds": len(records),
        "mean": series.mean() if done else math.nan,
        "std": series.std(ddof=1) if len(done) > 1 else (0.0 if done else math.nan),
        "state": "done" if len(done) == len(records) and records else "/".join(states) or "not run",
        "failure": failed[0] if failed else "",
        "running_epochs": max((len(r.metrics) for r in records if r.state == "running"), default=0),
    }


def cells(recipe: DictConfig, records: list[RunRecord]) -> pd.DataFrame:
    """One line per recipe row, in the recipe's order."""
    by_row: dict[str, list[RunRecord]] = {}
    for record in records:
        for row_id in record.rows:
            by_row.setdefault(row_id, []).append(record)
    lines = []
    for row in recipe.rows:
        mine = by_row.get(row.id, [])
        lines.append(
            {
                "id": row.id,
                "group": row.group,
                "column": row.column,
                "label": row.label,
                "baseline": row.baseline,
                "weight": row.loss.weight if row.loss.sar else 0.0,
                "paper": math.nan if row.paper.top1 is None else row.paper.top1,
                **_cell(mine),
            }
        )
    frame = pd.DataFrame(lines)
    frame["diff"] = frame["mean"] - frame["paper"]
    by_id = frame.set_index("id")
    baseline_mean = frame["baseline"].map(lambda b: by_id["mean"].get(b, math.nan) if b else math.nan)
    baseline_paper = frame["baseline"].map(lambda b: by_id["paper"].get(b, math.nan) if b else math.nan)
    frame["gain"] = frame["mean"] - baseline_mean.astype("float64")
    frame["paper_gain"] = frame["paper"] - baseline_paper.astype("float64")
    return frame


@dataclass
class Scorecard:
    cells_compared: int
    within_tolerance: int
    tolerance: float
    gains_compared: int
    gains_same_sign: int


def scorecard(frame: pd.DataFrame, tolerance: float) -> Scorecard:
    """Within `tolerance` points of the paper (meaningful at paper scale), and gains of the paper's sign."""
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
