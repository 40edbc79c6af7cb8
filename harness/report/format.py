"""How a cell reads: ours as mean +- std (n), gains written as the paper writes them, e.g. `76.72 (+2.5)`."""

import math
from typing import Any


def gain(value: float) -> str:
    """+2.5, +0.42, -0.46: two decimals at most, no trailing zeros (the paper's style)."""
    text = f"{value:+.2f}".rstrip("0").rstrip(".")
    return text if text not in ("+", "-") else "+0"


def ours(cell: dict[str, Any]) -> str:
    if cell["n"] == 0:
        if cell["state"] == "not run" or cell["state"] == "pending":
            return "not run"
        if "failed" in cell["state"]:
            return f"failed: {cell['failure']}"
        if "running" in cell["state"]:
            return f"running ({cell['running_epochs']} epochs done)"
        return cell["state"]
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
