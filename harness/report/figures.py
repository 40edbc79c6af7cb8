"""Figures with seaborn: validation curves per row (Fig. 3 with the paper's quoted points) and the
lambda sweep of Tab. 1a. PNGs carry no timestamp, so regenerating unchanged runs gives the same bytes."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from omegaconf import DictConfig

from harness.eval import METRICS
from harness.report import format
from harness.report.aggregate import RunRecord


def save(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    tmp.replace(path)


MAX_LEGEND = 20


def curves(recipe: DictConfig, records: list[RunRecord], path: Path, scale: str) -> bool:
    """Validation top-1 against epochs per row (mean over seeds, std shaded); False if nothing is logged."""
    labels = {row.id: row.label + (f" ({row.column})" if row.column else "") for row in recipe.rows}
    points = [
        (" = ".join(dict.fromkeys(labels[r] for r in record.rows)), m["epoch"], m["val_top1"])
        for record in records
        for m in record.metrics
        if "val_top1" in m
    ]
    if not points:
        return False
    frame = pd.DataFrame(points, columns=["run", "epoch", "top1"])
    curve = frame.groupby(["run", "epoch"], sort=False)["top1"].agg(["mean", "std"]).reset_index()
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    palette = dict(zip(curve["run"].unique(), sns.color_palette("husl", curve["run"].nunique()), strict=True))
    for run, part in curve.groupby("run", sort=False):
        ax.plot(part["epoch"], part["mean"], color=palette[run], label=run, linewidth=1.4)
        ax.fill_between(
            part["epoch"],
            part["mean"] - part["std"].fillna(0),
            part["mean"] + part["std"].fillna(0),
            color=palette[run],
            alpha=0.15,
            linewidth=0,
        )
    if scale == "paper":  # the paper's quoted points are in its epochs, which only paper scale shares
        for row in recipe.rows:
            for epoch, value in row.paper_points.items():
                ax.scatter([epoch], [value], marker="*", s=140, color="black", zorder=5)
                ax.annotate(
                    f"paper: {row.label}",
                    (epoch, value),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
    ax.set(xlabel="epoch", ylabel="val top-1 (%)")
    ax.set_title(f"{recipe.title} ({scale} scale)", fontsize=10)
    if len(palette) <= MAX_LEGEND:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    save(fig, path)
    return True


def lambda_sweep(recipe: DictConfig, frame: pd.DataFrame, path: Path, scale: str) -> bool:
    """The table's first metric against lambda for the recipe's `lambda_sweep` group: ours (mean +- std)
    and the paper's."""
    metric = recipe.metrics[0]
    group = frame[(frame["group"] == recipe.lambda_sweep) & (frame["metric"] == metric)]
    if group.empty:
        return False
    name = f"{format.name(metric)} ({METRICS[metric].unit})"
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6, 4))
    x = [f"{w:g}" for w in group["weight"]]
    paper_line = ax.plot(x, group["paper"], marker="o", color="grey", label="paper")
    # away from paper scale the two live on different ranges: ours gets its own axis on the right
    ours_ax = ax if scale == "paper" else ax.twinx()
    ours_line = ours_ax.errorbar(
        x, group["mean"], yerr=group["std"].fillna(0), marker="s", capsize=3, label=f"ours ({scale} scale)"
    )
    ax.set_xlabel("lambda (weight of the spatial entropy loss)")
    ax.set_ylabel(name if scale == "paper" else f"paper {name}")
    if ours_ax is not ax:
        ours_ax.set_ylabel(f"our {name}, {scale} scale")
        ours_ax.grid(False)
    ax.set_title(recipe.title.split(",")[0] + f": lambda sweep ({scale} scale)", fontsize=10)
    ax.legend(handles=[paper_line[0], ours_line], fontsize=8)
    save(fig, path)
    return True
