"""Figures with seaborn: validation curves per row, one panel per sub-table (Fig. 3 with the paper's quoted
points), and the lambda sweep of Tab. 1a (ours and the paper's in separate panels away from paper scale).
Every curve differs from its neighbours in colour and marker, and in line style past ten. PNGs carry no
timestamp, so regenerating unchanged runs gives the same bytes."""

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig

from harness.eval import METRICS
from harness.report import formatting
from harness.report.aggregate import RunRecord


def save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


MAX_LEGEND = 20
COLOURS = sns.color_palette("tab10", 10)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
STYLES = ("-", "--", ":", "-.")
PAPER_STYLE = {"color": "0.35", "marker": "o", "linestyle": "--"}
OURS_STYLE = {"color": COLOURS[0], "marker": "s", "linestyle": "-"}


def style(index: int) -> dict[str, Any]:
    """The look of the `index`-th curve of a panel: colour, marker and line style, unique for 40 curves
    (colour and marker change with every curve, the line style every ten)."""
    return {
        "color": COLOURS[index % len(COLOURS)],
        "marker": MARKERS[index % len(MARKERS)],
        "linestyle": STYLES[(index // len(COLOURS)) % len(STYLES)],
    }


def _panels(count: int, width: float, height: float) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(count, 1, figsize=(width, height * count), squeeze=False)
    return fig, list(axes[:, 0])


def curves(recipe: DictConfig, records: list[RunRecord], path: Path, scale: str) -> bool:
    """Validation top-1 against epochs per row (mean over seeds, std shaded), one panel per sub-table (a
    run that fills rows of several sub-tables is drawn in each); False if no run was validated at two
    epochs or more (a local run validated at its final epoch only: its one point is the table's number)."""
    rows = {row.id: row for row in recipe.rows}
    labels = {row.id: row.label + (f" ({row.column})" if row.column else "") for row in recipe.rows}
    points = []
    for record in records:
        mine = [r for r in record.rows if r in rows]
        for group in dict.fromkeys(rows[r].group for r in mine):
            run = " = ".join(dict.fromkeys(labels[r] for r in mine if rows[r].group == group))
            points += [
                (group, run, m["epoch"], m["val_top1"])
                for m in record.metrics
                if "val_top1" in m and "epoch" in m
            ]
    frame = pd.DataFrame(points, columns=["group", "run", "epoch", "top1"])
    if frame.empty or frame.groupby(["group", "run"])["epoch"].nunique().max() < 2:
        return False
    curve = frame.groupby(["group", "run", "epoch"], sort=False)["top1"].agg(["mean", "std"]).reset_index()
    groups = [g for g in dict.fromkeys(row.group for row in recipe.rows) if (curve["group"] == g).any()]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = _panels(len(groups), 9, 3.8)
    for ax, group in zip(axes, groups, strict=True):
        panel = curve[curve["group"] == group]
        runs = list(dict.fromkeys(panel["run"]))
        epochs = panel["epoch"].nunique()
        for index, (run, part) in enumerate(panel.groupby("run", sort=False)):
            look = style(index)
            ax.plot(
                part["epoch"],
                part["mean"],
                label=run,
                linewidth=1.4,
                markersize=4,
                markevery=max(1, epochs // 12),
                **look,
            )
            std = part["std"].fillna(0)
            band = {"color": look["color"], "alpha": 0.12, "linewidth": 0}
            ax.fill_between(part["epoch"], part["mean"] - std, part["mean"] + std, **band)
        if scale == "paper":  # the paper's quoted points are in its epochs, which only paper scale shares
            for row in recipe.rows:
                if row.group != group:
                    continue
                for epoch, value in row.paper_points.items():
                    ax.scatter([epoch], [value], marker="*", s=140, color="black", zorder=5)
                    ax.annotate(
                        f"paper: {row.label}",
                        (epoch, value),
                        textcoords="offset points",
                        xytext=(4, 4),
                        fontsize=8,
                    )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="val top-1 (%)")
        ax.set_title(f"({group})" if group else recipe.title.split(":")[0], fontsize=10)
        if len(runs) <= MAX_LEGEND:
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.suptitle(f"{recipe.title} ({scale} scale)", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True


def _say(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="0.4")


def lambda_sweep(recipe: DictConfig, frame: pd.DataFrame, path: Path, scale: str) -> bool:
    """The table's first metric against lambda for the recipe's `lambda_sweep` group: ours (mean +- std
    over the seeds) and the paper's, in one plot at paper scale, else in two panels with their own axes
    (their ranges and what they measure differ)."""
    metric = recipe.metrics[0]
    group = frame[(frame["group"] == recipe.lambda_sweep) & (frame["metric"] == metric)]
    if group.empty:
        return False
    name = f"{formatting.name(metric)} ({METRICS[metric].unit})"
    x = [f"{w:g}" for w in group["weight"]]
    seeds = int(group["n"].max())
    ours = f"ours, {scale} scale (mean ± std over {seeds} seed{'s' if seeds != 1 else ''})"
    sns.set_theme(style="whitegrid", context="notebook")
    if scale == "paper":
        fig, ax = plt.subplots(figsize=(6.4, 4))
        paper_ax = ours_ax = ax
    else:
        fig, (paper_ax, ours_ax) = plt.subplots(1, 2, figsize=(11, 4))
    if group["paper"].notna().any():
        paper_ax.plot(x, group["paper"], label="paper", **PAPER_STYLE)
    else:
        _say(paper_ax, "the paper prints no value")
    if group["mean"].notna().any():
        yerr = group["std"].fillna(0)
        ours_ax.errorbar(x, group["mean"], yerr=yerr, capsize=3, label=ours, **OURS_STYLE)
    else:
        _say(ours_ax, "no run of ours yet")
    for ax in {paper_ax, ours_ax}:
        ax.set_xlabel("lambda (weight of the spatial entropy loss)")
        ax.set_ylabel(name)
    if scale == "paper":
        paper_ax.legend(fontsize=8)
    else:
        paper_ax.set_title("the paper's", fontsize=10)
        ours_ax.set_title(ours, fontsize=10)
    fig.suptitle(recipe.title.split(",")[0] + f": lambda sweep ({scale} scale)", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    return True
