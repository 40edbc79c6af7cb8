"""How a cell reads: ours as mean +- std (n), gains written as the paper writes them, e.g. `76.72 (+2.5)` or
`51.6 (-1.2)`, and column headers as the paper names them, with an arrow for the better direction."""

import math
from typing import Any

from harness.eval import METRICS

# the paper's column names (Tab. 5: "IN-A (Acc.)", "IN-C (mCE)"); a metric missing here shows its name
NAMES = {
    "top1": "Top-1",
    "top5": "Top-5",
    "imagenet_a_top1": "IN-A (Acc.)",
    "mce": "IN-C (mCE)",
    "mean_corruption_error": "IN-C (mean error)",
    "jaccard": "Jaccard",
}
ARROWS = {"higher": "↑", "lower": "↓"}


def name(metric: str) -> str:
    return NAMES.get(metric, metric)


def header(metric: str) -> str:
    """`Top-1 ↑`, `IN-C (mCE ↓)`: the arrow points the way that is better, inside the paper's brackets."""
    text, arrow = name(metric), ARROWS[METRICS[metric].direction]
    return f"{text[:-1]} {arrow})" if text.endswith(")") else f"{text} {arrow}"


def gain(value: float) -> str:
    """+2.5, +0.42, -0.46: two decimals at most, no trailing zeros (the paper's style)."""
    text = f"{value:+.2f}".rstrip("0").rstrip(".")
    return text if text not in ("+", "-") else "+0"


def _without_value(cell: dict[str, Any]) -> str:
    """What a cell with no value from any seed says instead."""
    state = cell["state"]
    if state in ("not run", "pending"):
        return "not run"
    if "failed" in state:
        return f"failed: {cell['failure']}"
    if "running" in state:
        return f"running ({cell['running_epochs']} epochs done)"
    if "unavailable" in state:
        return f"unavailable: {cell['missing']}"
    return state


def ours(cell: dict[str, Any]) -> str:
    if cell["n"] == 0:
        return _without_value(cell)
    text = f"{cell['mean']:.2f}"
    if cell["n"] > 1:
        text += f" ± {cell['std']:.2f}"
    text += f" (n={cell['n']})"
    if not math.isnan(cell["gain"]):
        text += f" ({gain(cell['gain'])})"
    if cell["n"] < cell["seeds"]:
        text += f"; {cell['seeds'] - cell['n']} seed(s) {cell['state']}"
    return text


def paper(cell: dict[str, Any]) -> str:
    if math.isnan(cell["paper"]):
        return "-"
    text = f"{cell['paper']:g}"
    if not math.isnan(cell["paper_gain"]):
        text += f" ({gain(cell['paper_gain'])})"
    return text


def diff(cell: dict[str, Any]) -> str:
    return "-" if math.isnan(cell["diff"]) else f"{cell['diff']:+.2f}"
