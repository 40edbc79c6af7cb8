"""Attention maps in the style of Fig. 1 and Fig. 4: for a few validation images, every head's last-block
[CLS] attention over the patches, for a baseline row and its "+ SAR" row side by side, and the same maps
thresholded to keep 60% of the attention mass (as DINO does). The attention over the patches is the
softmax of S (Eq. 4), the pre-softmax logits the loss works on."""

import pickle
from pathlib import Path

import numpy as np
import timm
import torch
from omegaconf import DictConfig, OmegaConf
from timm.data import create_transform

from harness.data import DatasetNotFoundError, SyntheticConfig, build_dataset, dataset_spec
from harness.eval import keep_mass
from harness.recipe import ResolvedRun
from harness.report.figures import plt, save

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def _model(config: DictConfig, checkpoint: Path) -> torch.nn.Module:
    data = config.data
    classes = (
        data.synthetic.num_classes if data.dataset == "synthetic" else dataset_spec(data.dataset).num_classes
    )
    model = timm.create_model(
        config.model,
        num_classes=classes,
        last_block=config.last_block,
        **OmegaConf.to_container(config.model_kwargs),
    )
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def _images(config: DictConfig, n: int) -> torch.Tensor:
    data = config.data
    transform = create_transform(data.input_size, is_training=False, interpolation="bicubic", crop_pct=1.0)
    synthetic = SyntheticConfig(**OmegaConf.to_container(data.synthetic))
    val = build_dataset(data.dataset, "val", data.root, transform, synthetic=synthetic)
    step = max(1, len(val) // n)  # spread over the classes
    return torch.stack([val[i * step][0] for i in range(min(n, len(val)))])


def pair(recipe: DictConfig, runs: list[ResolvedRun]) -> tuple[ResolvedRun, ResolvedRun] | None:
    """A row with a baseline (full SAR, loss and last block, preferred), whose run and whose baseline's run
    both have a checkpoint: (baseline run, its run)."""
    first_run = {}
    for run in runs:
        for row in run.rows:
            first_run.setdefault(row, run)
    full_sar_first = sorted(recipe.rows, key=lambda row: not (row.loss.sar and row.last_block == "sar"))
    for row in full_sar_first:
        if row.baseline and row.id in first_run and row.baseline in first_run:
            ours, base = first_run[row.id], first_run[row.baseline]
            if (ours.folder / "checkpoint.pt").is_file() and (base.folder / "checkpoint.pt").is_file():
                return base, ours
    return None


def attention_figures(recipe: DictConfig, runs: list[ResolvedRun], out: Path, stem: str, n_images: int = 3):
    """Write the two figures; returns (their file names, problems met on the way)."""
    chosen = pair(recipe, runs)
    if chosen is None:
        return [], []
    labels = {row.id: row.label for row in recipe.rows}
    maps, names = [], []
    try:
        images = _images(chosen[0].config, n_images)
        with torch.no_grad():
            for run in chosen:
                _, S = _model(run.config, run.folder / "checkpoint.pt").forward_with_similarity(images)
                maps.append(S.flatten(2).softmax(-1).reshape(S.shape).numpy())
                names.append(labels[run.rows[0]])
    except DatasetNotFoundError as error:
        return [], [f"attention maps need the validation images: {str(error).splitlines()[0]}"]
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as error:
        return [], [f"attention maps: a checkpoint could not be read ({type(error).__name__}: {error})"]
    pictures = np.clip(images.permute(0, 2, 3, 1).numpy() * STD + MEAN, 0, 1)
    files = []
    for kind in ("attention", "attention_thresholded"):
        heads = maps[0].shape[1]
        fig, axes = plt.subplots(
            len(pictures) * 2, heads + 1, figsize=(1.6 * (heads + 1), 1.6 * 2 * len(pictures)), squeeze=False
        )
        for i, picture in enumerate(pictures):
            for j, (attention, name) in enumerate(zip(maps, names, strict=True)):
                row = axes[2 * i + j]
                row[0].imshow(picture)
                row[0].set_ylabel(name, fontsize=7)
                shown = keep_mass(attention[i]) if kind == "attention_thresholded" else attention[i]
                for h in range(heads):
                    row[h + 1].imshow(shown[h], cmap="inferno", interpolation="nearest")
                    if i == 0 and j == 0:
                        row[h + 1].set_title(f"head {h + 1}", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        what = "60% of the mass kept" if kind == "attention_thresholded" else "softmax over the patches"
        fig.suptitle(f"Last-block [CLS] attention ({what}): {names[0]} vs {names[1]}", fontsize=9)
        save(fig, out / "figures" / f"{stem}_{kind}.png")
        files.append(f"{stem}_{kind}.png")
    return files, []
