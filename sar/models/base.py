"""The interface every SAR-ready model shares, on top of timm's (`forward`, `forward_features`,
`forward_head`, `reset_classifier`)."""

from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from sar.models.layers import (
    FusedAttentionOutput,
    Grid,
    SARBlock,
    init_weights,
    model_kwargs,
    pretrained_cfg,
)

SIMILARITIES = ("dot", "cosine")


class SimilarityModel(nn.Module):
    """A classifier with a [CLS] token whose last block can return the similarity maps S.

    Inputs of other sizes than the build size work where the architecture allows it (height and width
    multiples of `size_multiple`): the position embeddings follow the input's token grid, and S's grid is
    the actual key grid of that input. A size that cannot work raises a ValueError that names the model,
    the size and the sizes that work; the build size always works, exactly as before.

    Subclasses implement `_tokens(x, with_similarity) -> (tokens, S or None)` (tokens `[B, 1 + h*w, C]`
    after the final norm: [CLS] first, then the final patch grid in raster order; S on the grid of the
    tokens of that input), `_grids(size) -> (feature grid, similarity grid)` (the same grids worked out
    from an input size) and `forward_head`, and provide `build_size` (H, W), `size_multiple` (the (H, W)
    multiple that other input sizes must be, or None where only the build size works), `feature_grid` and
    `similarity_grid` (the final token grid (h, w) and the grid of S at the build size).
    """

    feature_grid: Grid
    similarity_grid: Grid
    build_size: Grid
    size_multiple: Grid | None
    num_classes: int
    pretrained_cfg: dict

    def _grids(self, size: Grid) -> tuple[Grid, Grid]:
        raise NotImplementedError

    def _tokens(self, x: torch.Tensor, with_similarity: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens `[B, 1 + h*w, C]`: [CLS] first, then the final patch grid (DRLoc, segmentation)."""
        return self._tokens(x, with_similarity=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and S `[B, H, k, k]`: the last block's pre-softmax [CLS]-query x key logits (Eq. 4)."""
        tokens, S = self.forward_features_with_similarity(x)
        return self.forward_head(tokens), S

    def forward_features_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final tokens of `forward_features` and S, from one pass (SAR next to a token-level loss such
        as DRLoc's)."""
        tokens, S = self._tokens(x, with_similarity=True)
        return tokens, S

    def set_similarity(self, kind: str) -> None:
        """What `forward_with_similarity` returns as S: "dot" (Eq. 4, the last block's pre-softmax attention
        logits; the default) or "cosine" (Eq. 15, Appendix B). The attention itself is unchanged."""
        if kind not in SIMILARITIES:
            raise ValueError(f"{self.model_name}: similarity must be one of {SIMILARITIES}, got {kind!r}")
        for module in self.modules():
            if isinstance(module, FusedAttentionOutput):
                module.similarity = kind

    def patch_grid(self, tokens: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        """The patch tokens of `forward_features` as a feature map `[B, C, h, w]`.

        `grid`: the final token grid of the input the tokens came from, `feature_grid_for(x.shape[-2:])`;
        by default the build size's `feature_grid`.
        """
        h, w = self.feature_grid if grid is None else grid
        if tokens.dim() != 3 or tokens.shape[1] != 1 + h * w:
            raise ValueError(
                f"{self.model_name}.patch_grid: tokens {tuple(tokens.shape)} are not [CLS] + a {h}x{w} "
                "grid; for an input of another size than the build size pass "
                "grid=model.feature_grid_for(x.shape[-2:])"
            )
        return tokens[:, -h * w :].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    @property
    def model_name(self) -> str:
        """The registered (timm) name of the model, or its class name when it was built directly."""
        cfg = getattr(self, "pretrained_cfg", None) or {}
        return cfg.get("architecture") or type(self).__name__

    def check_input(self, x: torch.Tensor) -> Grid:
        """The spatial size (H, W) of the image batch `x`, or a ValueError if the model cannot take it."""
        if x.dim() != 4:
            raise ValueError(f"{self.model_name} takes images [B, C, H, W], got {tuple(x.shape)}")
        size = (x.shape[-2], x.shape[-1])
        self._check_size(size)
        return size

    def _check_size(self, size: Grid) -> None:
        if tuple(size) == tuple(self.build_size):
            return
        (h, w), (bh, bw), multiple = size, self.build_size, self.size_multiple
        if multiple is None:
            raise ValueError(
                f"{self.model_name} takes only its build size {bh}x{bw}, got a {h}x{w} input"
                f"{self._fixed_size_hint()}"
            )
        mh, mw = multiple
        if h > 0 and w > 0 and h % mh == 0 and w % mw == 0:
            return
        below = f"{max(h // mh, 1) * mh}x{max(w // mw, 1) * mw}"
        above = f"{-(-h // mh) * mh}x{-(-w // mw) * mw}"
        nearest = below if below == above else f"{below} or {above}"
        what = f"{mh} px" if mh == mw else f"{mh} px (height) and {mw} px (width)"
        raise ValueError(
            f"{self.model_name} (built for {bh}x{bw}) cannot take a {h}x{w} input: height and width must "
            f"be multiples of {what} ({self._multiple_reason()}; nearest here: {nearest}), or the build "
            f"size {bh}x{bw}"
        )

    def _multiple_reason(self) -> str:
        return "its total stride"

    def _fixed_size_hint(self) -> str:
        return ""

    def input_grids(self, size: Grid) -> tuple[Grid, Grid]:
        """The final token grid and the grid of S of an input of spatial size `size` (H, W); a ValueError
        for a size the model cannot take."""
        size = (int(size[0]), int(size[1]))
        self._check_size(size)
        return self._grids(size)

    def feature_grid_for(self, size: Grid) -> Grid:
        """The final patch-token grid (h, w) of an input of spatial size (H, W): for `patch_grid`."""
        return self.input_grids(size)[0]

    def similarity_grid_for(self, size: Grid) -> Grid:
        """The grid of S (kh, kw) of an input of spatial size (H, W)."""
        return self.input_grids(size)[1]


def run_last_block(
    block: SARBlock, x: torch.Tensor, grid: Grid, with_similarity: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if with_similarity:
        return block.forward_with_similarity(x, grid)
    return block(x, grid), None


class ClsHeadModel(SimilarityModel):
    """What the models written here (T2T, PVT, CvT) share: a [CLS] token joined to the last stage, a
    linear classifier on it, the official codes' initialisation and a square build size `img_size`."""

    img_size: int
    embed_dim: int
    cls_token: nn.Parameter

    def _init_head_and_weights(self, embed_dim: int, num_classes: int) -> None:
        self.embed_dim = self.num_features = embed_dim
        self.reset_classifier(num_classes)
        self.apply(init_weights)
        trunc_normal_(self.cls_token, std=0.02)

    @classmethod
    def create(cls, name: str, pretrained: bool, kwargs: dict, **cfg: Any) -> "ClsHeadModel":
        """The body of a timm entry point: build, then attach a timm-style pretrained_cfg."""
        model = cls(**model_kwargs(name, pretrained, kwargs))
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(
            (3, model.img_size, model.img_size), model.num_classes, architecture=name, **cfg
        )
        return model

    @property
    def build_size(self) -> Grid:
        return (self.img_size, self.img_size)

    def stage_position(self, stage: int, grid: Grid) -> torch.Tensor | None:
        """The position embedding added to stage `stage` whose token grid is `grid` (None: none)."""
        return None

    def prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def run_stages(
        self,
        x: torch.Tensor,
        embeds: nn.ModuleList,
        stages: nn.ModuleList,
        with_similarity: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A pyramid (PVT, CvT): per stage embed, blocks, feature map; [CLS] joins the last stage. Each
        stage's grid is the one its embedding produced from this input; S is on the last block's keys."""
        self.check_input(x)
        S = None
        for i, (embed, blocks) in enumerate(zip(embeds, stages, strict=True)):
            x, grid = embed(x)
            last_stage = i == len(stages) - 1
            if last_stage:
                x = self.prepend_cls(x)
            pos = self.stage_position(i, grid)
            x = self.pos_drop(x if pos is None else x + pos)
            for block in blocks[:-1]:
                x = block(x, grid)
            x, S = run_last_block(blocks[-1], x, grid, with_similarity and last_stage)
            if not last_stage:
                x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return self.norm(x), S

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = x[:, 0]
        return cls if pre_logits else self.head(cls)
