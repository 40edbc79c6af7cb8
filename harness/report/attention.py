"""Attention maps in the style of Fig. 1 and Fig. 4: for a few validation images, every head's last-block
[CLS] attention over the patches, overlaid on the image, for a baseline row and a row compared with it one
above the other, each panel on its own colour scale (a head's pattern legible whatever its range, as in the
paper's figures); and the same maps thresholded to keep 60% of the attention mass (as DINO does), the kept
patches tinted and outlined on the image, which compares the rows. The attention over the patches is the
softmax of S (Eq. 4), the pre-softmax logits the loss works on. Captions name the rows and the seed."""

from pathlib import Path

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.patches import Patch
from omegaconf import DictConfig, OmegaConf
from timm.data import create_transform

from harness.core.checkpoint import load_model
from harness.core.data import num_classes
from harness.core.model import build_model
from harness.data import DatasetNotFoundError, SyntheticConfig, build_dataset
from harness.engines.spec import Provides, spec_of
from harness.eval import keep_mass
from harness.recipe import ResolvedRun
from harness.report.figures import plt, save
from harness.text import one_line

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _model(config: DictConfig, checkpoint: Path) -> torch.nn.Module:
    """The run's model as its engine built it (harness.core.model.build_model), on the CPU, with S set to
    Eq. 4's logits whatever the run's L_se used: their softmax is the attention the figures show."""
    # a self-supervised backbone (Figs. 6, 7) has no classifier
    classes = 0 if spec_of(config.engine).provides is Provides.backbone else num_classes(config)
    model = build_model(config, classes, torch.device("cpu"))
    model.set_similarity("dot")
    model.load_state_dict(load_model(checkpoint, "attention figure"))
    return model.eval()


def _images(config: DictConfig, n: int) -> torch.Tensor:
    data = config.data
    transform = create_transform(data.input_size, is_training=False, interpolation="bicubic", crop_pct=1.0)
    synthetic = SyntheticConfig(**OmegaConf.to_container(data.synthetic))
    val = build_dataset(data.dataset, "val", data.root, transform, synthetic=synthetic)
    step = max(1, len(val) // n)  # spread over the classes
    return torch.stack([val[i * step][0] for i in range(min(n, len(val)))])


def pair(recipe: DictConfig, runs: list[ResolvedRun]) -> tuple[ResolvedRun, ResolvedRun, DictConfig] | None:
    """A row with a baseline (full SAR, loss and last block, preferred), whose run and whose baseline's run
    both have a checkpoint: (baseline run, its run, the row)."""
    first_run = {}
    for run in runs:
        for row in run.rows:
            first_run.setdefault(row, run)
    full_sar_first = sorted(recipe.rows, key=lambda row: not (row.loss.sar and row.last_block == "sar"))
    for row in full_sar_first:
        if row.baseline and row.id in first_run and row.baseline in first_run:
            ours, base = first_run[row.id], first_run[row.baseline]
            # both checkpoints hold a model
            trained = all(spec_of(r.config.engine).provides is not Provides.nothing for r in (ours, base))
            if (
                trained
                and (ours.folder / "checkpoint.pt").is_file()
                and (base.folder / "checkpoint.pt").is_file()
            ):
                return base, ours, row
    return None


def attention_figures(recipe: DictConfig, runs: list[ResolvedRun], out: Path, stem: str, n_images: int = 3):
    """Write the two figures; returns ({file, caption} of each, problems met on the way)."""
    chosen = pair(recipe, runs)
    if chosen is None:
        return [], []
    labels = {row.id: row.label for row in recipe.rows}
    *both, row = chosen
    names = [labels[row.baseline], row.label]  # the pair's own rows, whichever other rows share the runs
    seed = both[1].seed
    maps = []
    try:
        images = _images(both[0].config, n_images)
        with torch.no_grad():
            for run in both:
                _, S = _model(run.config, run.folder / "checkpoint.pt").forward_with_similarity(images)
                maps.append(S.flatten(2).softmax(-1).reshape(S.shape).numpy())
    except DatasetNotFoundError as error:
        return [], [f"attention maps need the validation images: {str(error).splitlines()[0]}"]
    except RuntimeError as error:  # CheckpointUnreadable, and load_state_dict's mismatched keys
        return [], [f"attention maps: a checkpoint could not be used: {one_line(str(error))}"]
    pictures = np.clip(images.permute(0, 2, 3, 1).numpy() * STD + MEAN, 0, 1)
    shown = []
    for kind in KINDS:
        draw = _draw_thresholded if kind == "attention_thresholded" else _draw_attention
        fig = draw(pictures, maps, names, seed)
        save(fig, out / "figures" / f"{stem}_{kind}.png")
        caption = _caption(kind, names, seed, recipe.scale)
        shown.append({"file": f"{stem}_{kind}.png", "caption": caption})
    return shown, []


KINDS = ("attention", "attention_thresholded")
OUTLINE = "#ffd400"  # the kept patches' outline; the dropped ones are dimmed
DIM = (0.0, 0.0, 0.0, 0.6)


def _caption(kind: str, names: list[str], seed: int, scale: str) -> str:
    """What an attention figure draws: which rows, which seed's runs, how."""
    rows = f"{names[0]} (above) and {names[1]} (below), the runs of seed {seed}, {scale} scale"
    if kind == "attention_thresholded":
        return (
            "The same maps thresholded as for the Jaccard (DINO's rule): outlined, the smallest set of "
            f"patches holding 60% of each head's attention; {rows}"
        )
    return (
        "Every head's last-block [CLS] attention over the patches, overlaid on validation images, each "
        f"panel on its own colour scale (its lowest patch to its highest: the pattern, not the level); {rows}"
    )


def _grid(pictures: np.ndarray, heads: int, names: list[str], title: str):
    """Two rows per image (baseline, then SAR), the image and then one panel per head."""
    rows = len(pictures) * len(names)
    fig, axes = plt.subplots(
        rows,
        heads + 1,
        figsize=(1.45 * (heads + 1) + 1.4, 1.45 * rows + 0.9),
        squeeze=False,
        layout="constrained",
    )
    for i, picture in enumerate(pictures):
        for j, name in enumerate(names):
            row = axes[len(names) * i + j]
            row[0].imshow(picture)
            row[0].set_ylabel(name, fontsize=7)
            if i == 0 and j == 0:
                row[0].set_title("image", fontsize=8)
                for h in range(heads):
                    row[h + 1].set_title(f"head {h + 1}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    return fig, axes


def _extent(picture: np.ndarray) -> tuple[float, float, float, float]:
    """Where a k x k map lies over the image: patch (r, c) over its pixels."""
    height, width = picture.shape[:2]
    return (-0.5, width - 0.5, height - 0.5, -0.5)


def _draw_attention(pictures: np.ndarray, maps: list[np.ndarray], names: list[str], seed: int):
    """Each head's map over the image, scaled from the panel's lowest patch to its highest (one scale for
    every panel left most heads near-invisible: a few heads' peaks set it), its opacity growing with the
    attention so that the image shows through where the head looks little; with the colour bar of that
    relative scale."""
    heads, cells = maps[0].shape[1], maps[0].shape[2] * maps[0].shape[3]
    title = f"Last-block [CLS] attention of each head over the image: {names[0]} vs {names[1]}, seed {seed}"
    fig, axes = _grid(pictures, heads, names, title)
    cmap = plt.get_cmap("inferno")
    for i, picture in enumerate(pictures):
        for j, attention in enumerate(maps):
            row = axes[len(maps) * i + j]
            for h in range(heads):
                panel = attention[i, h]
                level = (panel - panel.min()) / max(float(panel.max() - panel.min()), 1e-12)
                overlay = cmap(level)
                overlay[..., 3] = 0.1 + 0.75 * level
                row[h + 1].imshow(picture)
                row[h + 1].imshow(overlay, interpolation="nearest", extent=_extent(picture))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes[:, -1], shrink=0.6, aspect=30)
    label = f"attention of a patch, from the panel's lowest (0) to its highest (1) of {cells}"
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def _outline(mask: np.ndarray, picture: np.ndarray) -> list[list[tuple[float, float]]]:
    """The edges between kept and dropped patches (and the image border), in pixel coordinates."""
    x0, x1, y1, y0 = _extent(picture)
    dx, dy = (x1 - x0) / mask.shape[1], (y1 - y0) / mask.shape[0]
    padded = np.pad(mask, 1)  # padded[r + 1, c + 1] is mask[r, c]
    segments = []
    for r, c in zip(*np.nonzero(mask), strict=True):
        left, top = x0 + c * dx, y0 + r * dy
        right, bottom = left + dx, top + dy
        if not padded[r, c + 1]:
            segments.append([(left, top), (right, top)])
        if not padded[r + 2, c + 1]:
            segments.append([(left, bottom), (right, bottom)])
        if not padded[r + 1, c]:
            segments.append([(left, top), (left, bottom)])
        if not padded[r + 1, c + 2]:
            segments.append([(right, top), (right, bottom)])
    return segments


def _draw_thresholded(pictures: np.ndarray, maps: list[np.ndarray], names: list[str], seed: int):
    """Each head's kept patches (60% of its attention, `keep_mass`) outlined over the image, the dropped
    ones dimmed."""
    heads = maps[0].shape[1]
    title = f"Last-block [CLS] attention, 60% of its mass kept: {names[0]} vs {names[1]}, seed {seed}"
    fig, axes = _grid(pictures, heads, names, title)
    for i, picture in enumerate(pictures):
        for j, attention in enumerate(maps):
            row = axes[len(maps) * i + j]
            kept = keep_mass(attention[i])
            for h in range(heads):
                shade = np.zeros((*kept[h].shape, 4))
                shade[~kept[h]] = DIM
                row[h + 1].imshow(picture)
                row[h + 1].imshow(shade, interpolation="nearest", extent=_extent(picture))
                row[h + 1].add_collection(
                    LineCollection(_outline(kept[h], picture), colors=OUTLINE, linewidths=1.1)
                )
    handles = [
        Patch(
            facecolor="none",
            edgecolor=OUTLINE,
            label="outlined: the fewest patches holding 60% of the head's attention",
        ),
        Patch(facecolor=DIM, edgecolor="none", label="dimmed: the other patches"),
    ]
    fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, ncols=2)
    return fig
