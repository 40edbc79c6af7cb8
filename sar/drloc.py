"""The dense relative localization loss (DRLoc) of Liu et al. 2021a, "Efficient Training of Visual
Transformers with Small Datasets": the comparison method of Tab. 13.

    drloc = sar.DenseRelativeLoc(model.embed_dim)      # a submodule of the trained model, so that the
    tokens = model.forward_features(images)            # optimizer (and DDP) see its parameters
    grid = model.patch_grid(tokens, model.feature_grid_for(images.shape[-2:]))   # [B, C, h, w]
    loss = ce(model.forward_head(tokens), y) + lam * drloc(grid)

What the method is. Per image, m pairs of cells (p_i, p_j) are drawn uniformly, with replacement, from the
h x w grid of final patch tokens; an MLP on the concatenated embeddings [e(p_i), e(p_j)] (2C -> 512 ->
ReLU -> 512 -> ReLU -> 2) regresses their offset, and the loss is the L1 distance to the true offset,
averaged over the pairs, the two axes and the batch.

What the official code (yhlleo/VTs-Drloc) does, where the paper's text does not say it:
- the target is p_i - p_j per axis; with `--use_abs` (set in train.sh) |p_i - p_j|, otherwise
  p_i - p_j + (k - 1). `--use_normal` is parsed but never reaches the loss, which thus regresses raw cell
  offsets; the module's own `normalize` divides |offset| by k - 1, a signed offset + (k - 1) by 2(k - 1).
- λ is scheduled per epoch: linear from 0 to λ over `ssl_warmup_epochs` = 20, then linear down to 0 at
  the last epoch (train.sh's λ: Swin 0.5, T2T 0.1, CvT 0.1; none for ViT).
- m = `--sample_size` is 64 in main.py, although config.py says 32 (the command line wins).
- their ViT (lucidrains') feeds DRLoc x[:, 1:] straight out of the transformer, before any final norm
  (their Swin taps before its final norm as well); the head has PyTorch's default initialisation there.
- the pairs come from the global CPU RNG, and only square grids work (k = H for both axes).

What this module does. The official `l1` mode with targets |Δ| (`absolute=True`, the default) or
Δ + (k - 1), divided by k - 1 (resp. 2(k - 1)) only with `normalise=True`, k per axis, so non-square grids
work. λ is the caller's: multiply the returned loss by it (the harness schedules it). The features are
whatever the caller passes: `patch_grid(forward_features(x))` of a SAR-ready model gives the patch tokens
after the final norm (not before it, as their ViT does). The head and the loss are computed in float32
(or wider) even under autocast. The `ce` and `cbr` modes of the official code are not implemented.
"""

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("l1",)


class DenseRelativeLoc(nn.Module):
    """DRLoc head and loss: `module(features)` -> the mean L1 loss (a 0-dim float32 tensor, λ not applied).

    `features` `[B, C, h, w]`: the final patch tokens as a grid (`model.patch_grid(tokens)`), C = `dim`,
    h, w >= 2. `pairs` (m) pairs are drawn per image; `hidden` is the MLP width (512 in the official code);
    `mode` is the official code's loss type, of which only `"l1"` is implemented.

    Sampling: p_i and p_j are drawn independently and uniformly, with replacement, as
    `rows = randint(h, (B, m, 2))` then `cols = randint(w, (B, m, 2))` (in that order; `[..., 0]` is p_i,
    `[..., 1]` p_j), from `generator` if one is given (on the generator's device, then moved to the
    features' device: a CUDA generator for CUDA features avoids a copy), else from the global RNG of the
    features' device.

    Output and target axis 0 is the row (vertical) offset, axis 1 the column offset, as in the official
    code's indexing: Δ = p_i - p_j; target |Δ| (`absolute`) or Δ + (k - 1), k = h for rows and w for
    columns; with `normalise`, divided by k - 1 (absolute) or 2(k - 1) (signed), so the targets lie in
    [0, 1] (the official code's `normalize`, which its runs leave off).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 512,
        pairs: int = 64,
        mode: str = "l1",
        absolute: bool = True,
        normalise: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("hidden", hidden), ("pairs", pairs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DenseRelativeLoc: {name} must be a positive int, got {value!r}")
        if mode not in MODES:
            raise ValueError(
                f"DenseRelativeLoc: mode must be one of {MODES} (the official code's 'ce' and 'cbr' are not "
                f"implemented), got {mode!r}"
            )
        for name, value in (("absolute", absolute), ("normalise", normalise)):
            if not isinstance(value, bool):
                raise TypeError(f"DenseRelativeLoc: {name} must be a bool, got {value!r}")
        self.dim, self.hidden, self.pairs, self.mode = dim, hidden, pairs, mode
        self.absolute, self.normalise = absolute, normalise
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, hidden={self.hidden}, pairs={self.pairs}, mode={self.mode!r}, "
            f"absolute={self.absolute}, normalise={self.normalise}"
        )

    def _check(self, features: torch.Tensor) -> tuple[int, int, int]:
        if not isinstance(features, torch.Tensor):
            what = type(features).__name__
            raise TypeError(f"DenseRelativeLoc expects features as a torch.Tensor, got {what}")
        if features.dim() != 4:
            raise ValueError(
                "DenseRelativeLoc expects the patch tokens as a grid [B, C, h, w] "
                f"(model.patch_grid(tokens)), got shape {tuple(features.shape)}"
            )
        if not features.is_floating_point():
            raise TypeError(f"DenseRelativeLoc expects floating-point features, got dtype {features.dtype}")
        b, c, h, w = features.shape
        if c != self.dim:
            raise ValueError(
                f"DenseRelativeLoc expects features [B, C={self.dim}, h, w], got C={c} "
                f"(shape {tuple(features.shape)}; tokens [B, h*w, C] need patch_grid first)"
            )
        if h < 2 or w < 2:
            raise ValueError(f"DenseRelativeLoc needs a grid of at least 2x2 cells, got {h}x{w}")
        if b < 1:
            raise ValueError(f"DenseRelativeLoc needs at least one image, got shape {tuple(features.shape)}")
        return b, h, w

    def sample_pairs(
        self,
        batch: int,
        grid: tuple[int, int],
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """p_i, p_j `[batch, pairs, 2]` (int64, (row, col)) on `device`, drawn as the class docstring says.

        `grid` is (h, w), the cells the pairs are drawn from; `generator`, if given, makes the draw
        reproducible (it is drawn on the generator's device, then moved to `device`).
        """
        if generator is not None and not isinstance(generator, torch.Generator):
            what = type(generator).__name__
            raise TypeError(f"DenseRelativeLoc: generator must be a torch.Generator, got {what}")
        h, w = grid
        draw_device = generator.device if generator is not None else device
        shape = (batch, self.pairs, 2)
        rows = torch.randint(h, shape, generator=generator, device=draw_device)
        cols = torch.randint(w, shape, generator=generator, device=draw_device)
        pos = torch.stack([rows, cols], dim=-1).to(device)  # [B, m, 2 (i, j), 2 (row, col)]
        return pos[:, :, 0], pos[:, :, 1]

    def targets(self, p_i: torch.Tensor, p_j: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The regression targets `[B, m, 2]` (float32) of the pairs, per axis (row, col).

        `p_i`, `p_j` `[B, m, 2]` are the pairs' cells (from `sample_pairs`), `grid` the (h, w) they lie in,
        which gives the k of each axis.
        """
        k = torch.tensor(grid, dtype=torch.float32, device=p_i.device)
        delta = (p_i - p_j).to(torch.float32)
        if self.absolute:
            return delta.abs() / (k - 1) if self.normalise else delta.abs()
        shifted = delta + (k - 1)
        return shifted / (2 * (k - 1)) if self.normalise else shifted

    def predict(self, features: torch.Tensor, p_i: torch.Tensor, p_j: torch.Tensor) -> torch.Tensor:
        """The MLP's offsets `[B, m, 2]` for the pairs, in float32 (or wider) even under autocast.

        `features` `[B, C, h, w]` is the grid of patch tokens, `p_i`, `p_j` `[B, m, 2]` the (row, col)
        cells of the pairs, whose embeddings are concatenated as the MLP's input.
        """
        b, c, _, w = features.shape
        flat = features.flatten(2)  # [B, C, h*w]

        def gather(p: torch.Tensor) -> torch.Tensor:
            index = (p[..., 0] * w + p[..., 1]).unsqueeze(1).expand(b, c, -1)  # [B, C, m]
            return torch.gather(flat, 2, index).transpose(1, 2)  # [B, m, C]

        with torch.autocast(device_type=features.device.type, enabled=False):
            weight = self.mlp[0].weight
            dtype = torch.promote_types(torch.promote_types(features.dtype, weight.dtype), torch.float32)
            x = torch.cat([gather(p_i), gather(p_j)], dim=-1).to(dtype)
            for layer in self.mlp:
                if isinstance(layer, nn.Linear):
                    x = F.linear(x, layer.weight.to(dtype), layer.bias.to(dtype))
                else:
                    x = layer(x)
        return x

    def forward(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The mean L1 loss between the MLP's offsets and the targets of freshly drawn pairs.

        `features` `[B, C, h, w]` is the grid of patch tokens; `generator`, if given, draws the pairs
        (see `sample_pairs`), else the global RNG of the features' device does.
        """
        b, h, w = self._check(features)
        p_i, p_j = self.sample_pairs(b, (h, w), features.device, generator)
        pred = self.predict(features, p_i, p_j)
        return F.l1_loss(pred, self.targets(p_i, p_j, (h, w)).to(pred.dtype))
