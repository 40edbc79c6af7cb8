"""The interface every SAR-ready model shares, on top of timm's (`forward`, `forward_features`,
`forward_head`, `reset_classifier`)."""

from typing import Any

import torch
from torch import nn

from sar.models.layers import Grid, SARBlock


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
    """The head side of the models written here (T2T, PVT, CvT): a linear classifier on the [CLS] token."""

    img_size: int
    embed_dim: int

    def _init_head(self, embed_dim: int, num_classes: int) -> None:
        self.embed_dim = self.num_features = embed_dim
        self.reset_classifier(num_classes)

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
