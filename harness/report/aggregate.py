"""Read a table's runs from the run store into one DataFrame of cells, one per (row, metric of the recipe):
ours (mean, std, n over seeds, at the final epoch and at the best one), the paper's value, the difference,
gains over the baseline row with a verdict on whether the seeds separate the two rows (paired on the seeds
the two rows share, Welch's test otherwise), the smallest gain each sub-table could detect, and the check
of the gain the paper prints against its two numbers. Broken run folders are reported, never fatal."""

import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.special import stdtr, stdtrit

from harness.core.result import Result
from harness.engines.spec import Progress, spec_of
from harness.eval import CORRUPTIONS, METRICS, mce
from harness.lifecycle import RunState
from harness.recipe import ResolvedRun
from harness.recipe.load import row_loss
from harness.report import formatting
from harness.results import file_problems, read_metrics_checked, run_status

ALEXNET = "AlexNet (Hendrycks & Dietterich)"
ALPHA = 0.05  # the level of the two-sided tests that decide whether a gain is clear of the noise
POWER = 0.8  # the chance of detecting a gain of the detectable size (`detectable_gain`)
VERDICT_RULE = (
    "A gain is clear when the seeds separate the row from its baseline row. Where the two rows share at "
    "least 2 seeds (a seed fixes the same initial weights, data order and augmentation draws in both), the "
    "test is paired: a two-sided t-test on the per-seed differences (the final epoch's), shown with their "
    "mean's 95 % interval. Otherwise it is Welch's two-sided t-test on the two rows' per-seed values. A "
    f"gain is clear when p < {ALPHA:g}, within noise otherwise, and untested when a row has a single seed. "
    "Only clear gains are coloured and counted in the scorecard."
)


@dataclass
class RunRecord:
    uid: str
    rows: list[str]
    seed: int
    state: str
    detail: str
    folder: Path
    result: Result | None
    metrics: list[dict[str, Any]]
    problems: list[str] = field(default_factory=list)
    trained: dict[str, Any] = field(default_factory=dict)  # what was trained (`trained_of`)


def trained_of(run: ResolvedRun) -> dict[str, Any]:
    """What the run trains or evaluates, from its config: the model as built (its constructor arguments),
    the epochs, those of the run it starts from, and the data."""
    config = run.row_config
    synthetic, spec = config.data.synthetic, spec_of(config.engine)
    return {
        "engine": config.engine,
        "model": config.model,
        "model_kwargs": OmegaConf.to_container(config.model_kwargs),
        "epochs": config.epochs,
        "iterations": spec.length(config) if spec.progress is Progress.iteration else None,
        "upstream_epochs": run.upstream.row_config.epochs if run.upstream is not None else None,
        "dataset": config.data.dataset,
        "stands_for": config.data.stands_for,
        "classes": synthetic.num_classes,
        "train_images": synthetic.num_classes * synthetic.train_per_class,
        "val_images": synthetic.num_classes * synthetic.val_per_class,
    }


def read_run(
    run: ResolvedRun, trained: dict[str, Any] | None = None, state: RunState | None = None
) -> RunRecord:
    """What the report needs of a run folder; its broken files become problems, never errors. `state`:
    the run's state as `status` says it (harness.lifecycle: a local job that died without a result is
    failed, not running), else what the folder's files say."""
    folder = run.folder
    said = state or run_status(folder)
    metrics, broken_lines = read_metrics_checked(folder)
    trained = trained_of(run) if trained is None else trained
    return RunRecord(
        run.uid,
        run.rows,
        run.seed,
        said.state,
        said.detail,
        folder,
        said.result,
        metrics,
        file_problems(folder) + broken_lines,
        trained,
    )


def results(records: list[RunRecord]) -> list[Result]:
    """The results of the finished runs."""
    return [result for _, result in _finished(records)]


def _finished(records: list[RunRecord]) -> list[tuple[int, Result]]:
    """(seed, result) of the finished runs."""
    return [(r.seed, r.result) for r in records if r.result is not None]


def _stored(records: list[RunRecord], metric: str) -> tuple[dict[int, float], str]:
    """The metric as each finished run wrote it, by seed, and why some finished runs have no value."""
    done = _finished(records)
    values = {seed: r.metrics[metric] for seed, r in done if metric in r.metrics}
    return values, "" if len(values) == len(done) else f"result.json has no {metric!r}"


def _best(records: list[RunRecord], metric: str) -> list[float]:
    """The metric at each finished run's best validated epoch (result.json's `best`), where it says and
    the run's log validated the metric more than once: a run validated at its final epoch only has no
    best to choose (its best is its final value)."""
    chosen = [
        r.result.best.metrics
        for r in records
        if r.result is not None
        and r.result.best is not None
        and sum(f"val_{metric}" in m for m in r.metrics) > 1
    ]
    return [best[metric] for best in chosen if metric in best]


def _mean_errors(tables: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per corruption and severity, the mean error over seeds (the 15 corruptions of the mCE only)."""
    missing = sorted({c for table in tables for c in CORRUPTIONS if c not in table})
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    return {c: np.mean([table[c] for table in tables], axis=0).tolist() for c in CORRUPTIONS}


def _local_mce(
    records: list[RunRecord], reference: list[RunRecord], label: str
) -> tuple[dict[int, float], str]:
    """Each seed's mCE normalised by the reference row's ImageNet-C errors (mean over its seeds): there is
    no AlexNet at local scale, so the baseline row takes its place."""
    done = [(seed, r.extra.imagenet_c_errors) for seed, r in _finished(records)]
    if not done:
        return {}, ""
    tables = [errors for r in results(reference) if (errors := r.extra.imagenet_c_errors) is not None]
    if not tables:
        return {}, f"the reference row {label} has no ImageNet-C errors"
    try:
        base = _mean_errors(tables)
        values = {
            seed: mce({c: e[c] for c in CORRUPTIONS if c in e}, base) for seed, e in done if e is not None
        }
    except (TypeError, ValueError) as error:
        return {}, f"ImageNet-C errors unusable: {error}"
    return values, "" if len(values) == len(done) else "result.json has no imagenet_c_errors"


def _reference_row(row: DictConfig) -> str:
    """The row whose errors normalise a row's local mCE: its baseline, else itself (hence 100)."""
    return row.baseline or row.id


def _values(
    recipe: DictConfig,
    row: DictConfig,
    metric: str,
    by_row: dict[str, list[RunRecord]],
    labels: dict[str, str],
) -> tuple[dict[int, float], str]:
    if metric == "mce" and recipe.scale != "paper":
        reference = _reference_row(row)
        return _local_mce(by_row.get(row.id, []), by_row.get(reference, []), labels[reference])
    return _stored(by_row.get(row.id, []), metric)


def _moments(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for one value; NaN for none)."""
    if not values:
        return math.nan, math.nan
    array = np.asarray(values, dtype="float64")
    return float(array.mean()), float(array.std(ddof=1)) if len(values) > 1 else 0.0


def _cell(
    records: list[RunRecord], per_seed: dict[int, float], missing: str, best: list[float]
) -> dict[str, Any]:
    """Ours over seeds; `state` names what the seeds without a value are (failed, running, unavailable)."""
    values = list(per_seed.values())
    lacking = {r.state for r in records if r.state != "done"} | ({"unavailable"} if missing else set())
    failed = [r.detail for r in records if r.state == "failed"]
    full = bool(records) and len(values) == len(records)
    mean, std = _moments(values)
    best_mean, best_std = _moments(best)
    return {
        "n": len(values),
        "per_seed": per_seed,
        "seeds": len(records),
        "mean": mean,
        "std": std,
        "best_n": len(best),
        "best_mean": best_mean,
        "best_std": best_std,
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


def welch_p(mean: float, std: float, n: int, base_mean: float, base_std: float, base_n: int) -> float:
    """Welch's two-sided t-test of two rows' means from their per-seed mean, std (ddof=1) and count; NaN
    with fewer than 2 seeds in either row. Two rows without any spread differ surely or not at all."""
    if n < 2 or base_n < 2 or math.isnan(mean) or math.isnan(base_mean):
        return math.nan
    v1, v2 = std**2 / n, base_std**2 / base_n
    difference = mean - base_mean
    if v1 + v2 == 0:
        return 0.0 if difference else 1.0
    df = (v1 + v2) ** 2 / (v1**2 / (n - 1) + v2**2 / (base_n - 1))
    return float(2 * stdtr(df, -abs(difference) / math.sqrt(v1 + v2)))


def paired(values: dict[int, float], base: dict[int, float]) -> dict[str, float]:
    """The paired t-test of a row against its baseline on the seeds both have: the mean difference, the
    differences' standard deviation (ddof=1), their count, the two-sided p and the mean's 95 % interval;
    empty with fewer than 2 shared seeds. Differences without spread differ surely or not at all."""
    seeds = sorted(set(values) & set(base))
    if len(seeds) < 2:
        return {}
    d = np.asarray([values[s] - base[s] for s in seeds], dtype="float64")
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    half = float(stdtrit(n - 1, 1 - ALPHA / 2)) * sd / math.sqrt(n)
    p = (0.0 if mean else 1.0) if sd == 0 else float(2 * stdtr(n - 1, -abs(mean) / (sd / math.sqrt(n))))
    return {"pairs": n, "diff_sd": sd, "p": p, "ci_low": mean - half, "ci_high": mean + half}


def detectable_gain(sd: float, n: int) -> float:
    """The smallest true gain that a paired t-test on `n` seeds whose differences spread by `sd` detects
    with probability POWER at level ALPHA (the usual approximation (t_{1-a/2} + t_{power}) sd / sqrt(n),
    with n - 1 degrees of freedom); NaN with fewer than 2 seeds."""
    if n < 2 or math.isnan(sd):
        return math.nan
    return float(stdtrit(n - 1, 1 - ALPHA / 2) + stdtrit(n - 1, POWER)) * sd / math.sqrt(n)


def sampling_error(percent: float, images: int) -> float:
    """The standard error, in points, of an accuracy near `percent` measured on `images` images."""
    if images < 1 or math.isnan(percent):
        return math.nan
    share = percent / 100
    return 100 * math.sqrt(share * (1 - share) / images)


def paper_gains(lines: pd.DataFrame) -> pd.Series:
    """The paper's gain on each line of `cells`: the difference of its two numbers at their precision
    (73.76 - 74.22 is -0.4599999... in floats, -0.46 here), else the gain it prints, else NaN."""
    return pd.Series(
        [
            printed if math.isnan(difference) else round(difference, int(digits))
            for difference, digits, printed in zip(
                lines["paper_gain"], lines["gain_digits"], lines["printed_gain"], strict=True
            )
        ],
        index=lines.index,
        dtype="float64",
    )


def power(part: pd.DataFrame, metric: str) -> dict[str, float] | None:
    """What a sub-table's seeds could detect in `metric` (None where no gain of it was tested in pairs):
    pairs (the fewest shared seeds of its pairs of rows), diff_sd (the per-seed differences' spread, pooled
    over its pairs), detectable (`detectable_gain`), paper_low and paper_high (the paper's gains there, NaN
    where it has none), val_images and sampling_error (one run's, for top-1 on the local validation set;
    NaN otherwise): whether the sub-table could have shown the paper's effect at all."""
    pairs = part[(part["metric"] == metric) & (part["test"] == "paired")]
    if pairs.empty:
        return None
    n, sd = int(pairs["pairs"].min()), float((pairs["diff_sd"] ** 2).mean() ** 0.5)
    paper = paper_gains(pairs).dropna()
    images = int(pairs["val_images"].max())
    error = math.nan
    if metric == "top1" and images:
        error = sampling_error(float(part.loc[part["metric"] == metric, "mean"].mean()), images)
    return {
        "pairs": n,
        "diff_sd": sd,
        "detectable": detectable_gain(sd, n),
        "paper_low": float(paper.min()) if not paper.empty else math.nan,
        "paper_high": float(paper.max()) if not paper.empty else math.nan,
        "val_images": images,
        "sampling_error": error,
    }


def verdict(gain: float, p: float) -> str:
    """clear | noise | untested (a row with one seed) | "" (no gain: no baseline, or no value)."""
    if math.isnan(gain):
        return ""
    if math.isnan(p):
        return "untested"
    return "clear" if p < ALPHA else "noise"


def audit(printed: float, paper: float, base: float) -> str:
    """The paper's printed gain against the difference of the two numbers it compares: ok when they agree
    to half a unit of the printed gain's last decimal (the paper drops trailing zeros: +0.1 for 0.10),
    mismatch otherwise, unchecked without the two numbers; "" where the paper prints no gain."""
    if math.isnan(printed):
        return ""
    if math.isnan(paper) or math.isnan(base):
        return "unchecked"
    difference = formatting.exact(paper) - formatting.exact(base)
    half_unit = Decimal(5).scaleb(-formatting.decimals(printed) - 1)
    return "ok" if abs(formatting.exact(printed) - difference) <= half_unit else "mismatch"


def _described(records: list[RunRecord]) -> dict[str, str]:
    """What a row's runs trained, in words (from the first run that says)."""
    trained = next((r.trained for r in records if r.trained), None)
    if trained is None:
        return {"arch": "", "schedule": "", "data": ""}
    return {
        "arch": formatting.architecture(trained["model_kwargs"]),
        "schedule": formatting.schedule(trained),
        "data": formatting.data(trained),
    }


def _val_images(records: list[RunRecord]) -> int:
    """The validation images a row's runs were measured on, where they say (the local synthetic set)."""
    return next((int(r.trained["val_images"]) for r in records if r.trained.get("val_images")), 0)


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def cells(recipe: DictConfig, records: list[RunRecord]) -> pd.DataFrame:
    """One line per (recipe row, metric of `recipe.metrics`): rows in the recipe's order, then metrics.
    Columns: id, group, column, label, baseline, weight, sar (a row of SAR), metric, direction, note (the
    recipe row's, for the reader), paper, printed_gain, val_images, arch, schedule, data (what was
    trained, in words; blank at paper scale), n, per_seed, seeds, mean, std, best_n, best_mean, best_std,
    state, failure, missing, running_epochs, diff, gain, paper_base, paper_gain (the difference of the
    paper's two numbers), paper_delta (that, else the printed gain), paper_prints_gains (the recipe lists
    the printed gains: the paper column shows those only), digits (the paper's decimals in the row's
    sub-table and metric), gain_digits, test (paired | welch), p, pairs, diff_sd, ci_low, ci_high (the
    paired test's), verdict, improved, audit."""
    by_row: dict[str, list[RunRecord]] = {}
    for record in records:
        for row_id in record.rows:
            by_row.setdefault(row_id, []).append(record)
    labels = {row.id: row.label for row in recipe.rows}
    blank = {"arch": "", "schedule": "", "data": ""}
    lines = []
    for row in recipe.rows:
        row_records = by_row.get(row.id, [])
        trained = _described(row_records) if recipe.scale != "paper" else blank
        printed = row.get("paper_gain") or {}
        loss = row_loss(recipe, row)
        for metric in recipe.metrics:
            lines.append(
                {
                    "id": row.id,
                    "group": row.group,
                    "column": row.column,
                    "label": row.label,
                    "baseline": row.baseline,
                    "weight": loss["weight"] if loss["sar"] else 0.0,
                    # a row of SAR (L_se, or its last block: Tab. 1b's components, a model trained
                    # with it and then fine-tuned, evaluated or segmented), not another method (DRLoc)
                    "sar": bool(loss["sar"]) or row.last_block != "standard",
                    "metric": metric,
                    "direction": METRICS[metric].direction,
                    "note": row.get("note") or "",
                    "paper": _number(row.paper.get(metric)),
                    "printed_gain": _number(printed.get(metric)),
                    "val_images": _val_images(row_records) if recipe.scale != "paper" else 0,
                    # what the final and best values are of: an epoch, or a segmentation's iteration
                    "step": "iteration" if any(r.trained.get("iterations") for r in row_records) else "epoch",
                    **trained,
                    **_cell(
                        row_records,
                        *_values(recipe, row, metric, by_row, labels),
                        _best(row_records, metric),
                    ),
                }
            )
    frame = pd.DataFrame(lines)
    frame["diff"] = frame["mean"] - frame["paper"]
    baseline_mean = _of_baseline(frame, "mean")
    frame["gain"] = frame["mean"] - baseline_mean
    frame["paper_base"] = _of_baseline(frame, "paper")
    frame["paper_gain"] = frame["paper"] - frame["paper_base"]
    frame["paper_delta"] = frame["paper_gain"].fillna(frame["printed_gain"])
    # a recipe that lists the gains the paper prints lists them all: the others are not printed
    frame["paper_prints_gains"] = bool(frame["printed_gain"].notna().any())
    frame["digits"] = _digits(frame)
    frame["gain_digits"] = [
        max(formatting.decimals(a), formatting.decimals(b))
        for a, b in zip(frame["paper"], frame["paper_base"], strict=True)
    ]
    base = {c: _of_baseline(frame, c) for c in ("std", "n")}
    tests = [
        paired(mine, theirs) if isinstance(theirs, dict) else {}
        for mine, theirs in zip(frame["per_seed"], _of_baseline(frame, "per_seed", object), strict=True)
    ]
    welch = [
        welch_p(*values)
        for values in zip(
            frame["mean"],
            frame["std"],
            frame["n"],
            baseline_mean,
            base["std"],
            base["n"].fillna(0),
            strict=True,
        )
    ]
    frame["test"] = [
        "paired" if t else ("welch" if not math.isnan(w) else "") for t, w in zip(tests, welch, strict=True)
    ]
    frame["p"] = [t["p"] if t else w for t, w in zip(tests, welch, strict=True)]
    for key in ("pairs", "diff_sd", "ci_low", "ci_high"):
        frame[key] = [t.get(key, math.nan) for t in tests]
    frame["verdict"] = list(map(verdict, frame["gain"], frame["p"]))
    improved = map(_improved, frame["metric"], frame["mean"], baseline_mean)
    frame["improved"] = pd.Series(list(improved), index=frame.index, dtype="object")
    frame["audit"] = list(map(audit, frame["printed_gain"], frame["paper"], frame["paper_base"]))
    return frame


def _digits(frame: pd.DataFrame) -> pd.Series:
    """Per line, the decimals the paper prints in its sub-table for that metric: the most any of its
    numbers and printed gains there has (ours are written with as many)."""
    digits = pd.Series(formatting.DEFAULT_DIGITS, index=frame.index, dtype="int64")
    for _, part in frame.groupby(["group", "metric"], sort=False):
        values = [*part["paper"], *part["printed_gain"]]
        digits[part.index] = formatting.precision(values)
    return digits


def _of_baseline(frame: pd.DataFrame, column: str, dtype: Any = "float64") -> pd.Series:
    """Each line's baseline row's value of `column` for the same metric; NaN without a baseline."""
    values = dict(zip(zip(frame["id"], frame["metric"], strict=True), frame[column], strict=True))
    keys = zip(frame["baseline"], frame["metric"], strict=True)
    return pd.Series([values.get(key, math.nan) for key in keys], index=frame.index, dtype=dtype)


def arithmetic(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The printed gains that do not hold or cannot be checked, with the difference they should be."""
    found = []
    for cell in frame[frame["audit"].isin(["mismatch", "unchecked"])].to_dict("records"):
        difference = None
        if cell["audit"] == "mismatch":
            difference = formatting.exact(cell["paper"]) - formatting.exact(cell["paper_base"])
        found.append({**cell, "difference": difference})
    return found


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
    found = {r.extra.jaccard_void or "not recorded" for r in results(records) if "jaccard" in r.metrics}
    if not found:
        return None
    return found.pop() if len(found) == 1 else "mixed"


@dataclass
class Scorecard:
    cells_compared: int  # cells with ours and the paper's value
    within_tolerance: int
    tolerance: float
    gains_compared: int  # cells with our gain over the baseline row and the paper's (not 0)
    gains_clear: int  # of those, where the seeds separate the two rows (`verdict`)
    gains_same_sign: int  # of the clear ones, those of the paper's sign
    gains_noise: int
    gains_untested: int  # a row or its baseline has a single seed
    arithmetic_checked: int  # printed gains checked against the paper's two numbers
    arithmetic_flagged: int  # of those, the ones that do not hold


def scorecard(frame: pd.DataFrame, tolerance: float) -> Scorecard:
    """Within `tolerance` points of the paper (meaningful at paper scale), and gains of the paper's sign
    counted only where the seeds separate the rows: the sign, not the direction, so a lower mCE counts when
    the paper's is lower too."""
    compared = frame.dropna(subset=["mean", "paper"])
    gains = frame[frame["sar"]].dropna(subset=["gain", "paper_delta"])  # SAR's gains: not DRLoc's
    gains = gains[gains["paper_delta"] != 0]  # no sign to agree with
    clear = gains[gains["verdict"] == "clear"]
    same_sign = np.sign(clear["gain"]) == np.sign(clear["paper_delta"])
    audited = frame["audit"].isin(["ok", "mismatch"])
    return Scorecard(
        cells_compared=len(compared),
        within_tolerance=int((compared["diff"].abs() <= tolerance).sum()),
        tolerance=tolerance,
        gains_compared=len(gains),
        gains_clear=len(clear),
        gains_same_sign=int(same_sign.sum()),
        gains_noise=int((gains["verdict"] == "noise").sum()),
        gains_untested=int((gains["verdict"] == "untested").sum()),
        arithmetic_checked=int(audited.sum()),
        arithmetic_flagged=int((frame["audit"] == "mismatch").sum()),
    )
