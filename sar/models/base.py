"""The interface every SAR-ready model shares, on top of timm's (`forward`, `forward_features`,
`forward_head`, `reset_classifier`)."""

from collections.abc import Iterable
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from sar.models.layers import Grid, SARBlock, init_weights, model_kwargs, pretrained_cfg


class SimilarityModel(nn.Module):
    """A classifier with a [CLS] token whose last block can return the similarity maps S.

    Subclasses implement `_tokens(x, with_similarity) -> (tokens, S or None)` (tokens `[B, 1 + h*w, C]`
    after the final norm: [CLS] first, then the final patch grid in raster order) and `forward_head`, and
    set `feature_grid` (h, w) and `similarity_grid` (the k x k grid of S).
    """

    feature_grid: Grid
    similarity_grid: Grid
    num_classes: int

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
        tokens, S = self._tokens(x, with_similarity=True)
        return self.forward_head(tokens), S

    def patch_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """The patch tokens of `forward_features` as a feature map `[B, C, h, w]`."""
        h, w = self.feature_grid
        return tokens[:, -h * w :].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def run_last_block(
    block: SARBlock, x: torch.Tensor, grid: Grid, with_similarity: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if with_similarity:
        return block.forward_with_similarity(x, grid)
    return block(x, grid), None


class ClsHeadModel(SimilarityModel):
    """What the models written here (T2T, PVT, CvT) share: a [CLS] token joined to the last stage, a
    linear classifier on it, the official codes' initialisation and a fixed input size."""

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
            (3, model.img_size, model.img_size), model.num_classes, **cfg
        )
        return model

    def prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def run_stages(
        self,
        x: torch.Tensor,
        embeds: nn.ModuleList,
        stages: nn.ModuleList,
        positions: Iterable[torch.Tensor | None],
        with_similarity: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A pyramid (PVT, CvT): per stage embed, blocks, feature map; [CLS] joins the last stage."""
        self._check_input(x)
        S = None
        for i, (embed, blocks, pos) in enumerate(zip(embeds, stages, positions, strict=True)):
            x, grid = embed(x)
            last_stage = i == len(stages) - 1
            if last_stage:
                x = self.prepend_cls(x)
            x = self.pos_drop(x if pos is None else x + pos)
            for block in blocks[:-1]:
                x = block(x, grid)
            x, S = run_last_block(blocks[-1], x, grid, with_similarity and last_stage)
            if not last_stage:
                x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        return self.norm(x), S

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(
                f"{type(self).__name__} was built for [B, C, {self.img_size}, {self.img_size}] inputs, "
                f"got {tuple(x.shape)}; create it with img_size={x.shape[-1]}"
            )

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
