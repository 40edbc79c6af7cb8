"""The interface every SAR-ready model shares, on top of timm's: `forward`, `forward_features`,
`forward_head`, `reset_classifier`, `forward_intermediates`, `prune_intermediate_layers`,
`set_grad_checkpointing` and `timm.create_model(..., features_only=True)`."""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models import checkpoint, register_notrace_function
from timm.models._features import FeatureGetterNet  # private in timm 1.0: see with_features
from torch import nn

from sar.models.layers import (
    FusedAttentionOutput,
    Grid,
    SARBlock,
    build,
    init_weights,
    model_kwargs,
    pretrained_cfg,
)

SIMILARITIES = ("dot", "cosine")
Indices = int | Sequence[int] | None
NUM_PREFIX_TOKENS = 1  # SAR needs exactly one prefix token: the [CLS] token, first


def size_error(
    size: Grid, name: str, build_size: Grid, multiple: Grid | None, reason: str, fixed_hint: str
) -> str:
    """Why a model `name` built for `build_size` cannot take an input of spatial size `size` ("" if it can):
    other sizes must be multiples of `multiple` (None: only the build size works)."""
    if tuple(size) == tuple(build_size):
        return ""
    (h, w), (bh, bw) = size, build_size
    if multiple is None:
        return f"{name} takes only its build size {bh}x{bw}, got a {h}x{w} input{fixed_hint}"
    mh, mw = multiple
    if h > 0 and w > 0 and h % mh == 0 and w % mw == 0:
        return ""
    below = f"{max(h // mh, 1) * mh}x{max(w // mw, 1) * mw}"
    above = f"{-(-h // mh) * mh}x{-(-w // mw) * mw}"
    nearest = below if below == above else f"{below} or {above}"
    what = f"{mh} px" if mh == mw else f"{mh} px (height) and {mw} px (width)"
    return (
        f"{name} (built for {bh}x{bw}) cannot take a {h}x{w} input: height and width must be multiples "
        f"of {what} ({reason}; nearest here: {nearest}), or the build size {bh}x{bw}"
    )


@register_notrace_function  # FX: a leaf of the graph, run on the real input (no control flow traced)
def check_image(
    x: torch.Tensor, name: str, build_size: Grid, multiple: Grid | None, reason: str, fixed_hint: str
) -> Grid:
    """The spatial size (H, W) of the image batch `x`, or a ValueError (see `size_error`)."""
    if x.dim() != 4:
        raise ValueError(f"{name} takes images [B, C, H, W], got {tuple(x.shape)}")
    size = (x.shape[-2], x.shape[-1])
    error = size_error(size, name, build_size, multiple, reason, fixed_hint)
    if error:
        raise ValueError(error)
    return size


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
    `similarity_grid` (the final token grid (h, w) and the grid of S at the build size), `feature_info`
    (timm's list of per-intermediate dicts) and `default_out_indices` (what `features_only` takes).
    """

    feature_grid: Grid
    similarity_grid: Grid
    build_size: Grid
    size_multiple: Grid | None
    num_classes: int
    pretrained_cfg: dict
    feature_info: list[dict]
    default_out_indices: int | tuple[int, ...]
    grad_checkpointing = False

    def _grids(self, size: Grid) -> tuple[Grid, Grid]:
        raise NotImplementedError

    def _tokens(self, x: torch.Tensor, with_similarity: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The logits `[B, num_classes]` from the final tokens `x` of `forward_features` (timm's contract);
        with `pre_logits`, the classifier's input `[B, C]` instead."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final tokens `[B, 1 + h*w, C]` of the images `x` `[B, C_in, H, W]`: [CLS] first, then the final
        patch grid (DRLoc, segmentation)."""
        return self._tokens(x, with_similarity=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits `[B, num_classes]` of the images `x` `[B, C_in, H, W]`, without S (evaluation)."""
        return self.forward_head(self.forward_features(x))

    def forward_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and S `[B, H, k, k]`: the last block's pre-softmax [CLS]-query x key logits (Eq. 4)."""
        tokens, S = self.forward_features_with_similarity(x)
        return self.forward_head(tokens), S

    def forward_features_with_similarity(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The final tokens of `forward_features(x)` and S, from one pass (SAR next to a token-level loss such
        as DRLoc's)."""
        tokens, S = self._tokens(x, with_similarity=True)
        return tokens, S

    def set_similarity(self, kind: str) -> None:
        """What `forward_with_similarity` returns as S: `kind` "dot" (Eq. 4, the last block's pre-softmax
        attention logits; the default) or "cosine" (Eq. 15, Appendix B). The attention itself is unchanged."""
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
        return check_image(
            x,
            self.model_name,
            tuple(self.build_size),
            self.size_multiple,
            self._multiple_reason(),
            self._fixed_size_hint(),
        )

    def _check_size(self, size: Grid) -> None:
        error = size_error(
            size,
            self.model_name,
            tuple(self.build_size),
            self.size_multiple,
            self._multiple_reason(),
            self._fixed_size_hint(),
        )
        if error:
            raise ValueError(error)

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

    def resampled_position(
        self, pos_embed: torch.Tensor, grid: Grid, build_grid: Grid, num_prefix_tokens: int
    ) -> torch.Tensor:
        """A ViT-style position embedding `[1, (prefix +) h*w, C]` for the token grid `grid` (timm's
        `resample_abs_pos_embed`, bicubic): `pos_embed` is the one built for the grid `build_grid`, its
        first `num_prefix_tokens` entries ([CLS]'s, where the table has one) kept as they are.

        Called from this module, which defines the `forward` that FX traces: FX keeps timm's notrace
        functions as graph leaves only in the namespaces it patches."""
        return resample_abs_pos_embed(
            pos_embed, new_size=grid, old_size=build_grid, num_prefix_tokens=num_prefix_tokens
        )

    def checkpointed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`; with grad checkpointing on, its activations are recomputed in the backward pass
        instead of kept. timm's `checkpoint` is non-reentrant: a grid passes as a plain argument, and a
        tuple output such as (tokens, S) comes back with S still carrying its gradient."""
        return checkpoint(fn, *args) if self.grad_checkpointing else fn(*args)

    def run_last_block(
        self, block: SARBlock, x: torch.Tensor, grid: Grid, with_similarity: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`block` (a `SARBlock`) on tokens `x` `[B, N, C]` whose patch grid is `grid`, under grad
        checkpointing when it is on, and its S when `with_similarity` (else None)."""
        if with_similarity:
            return self.checkpointed(block.forward_with_similarity, x, grid)
        return self.checkpointed(block, x, grid), None

    def take_indices(self, count: int, indices: Indices, what: str) -> tuple[list[int], int]:
        """The indices of timm's `forward_intermediates` (None: all, n: the last n, a sequence: those,
        negative ones from the end) among `count` blocks or stages (`what` names them in the error): the
        absolute indices and the largest, or a ValueError naming the model and the bad value. Written here:
        timm's own `feature_take_indices` is private."""
        if isinstance(indices, int):
            bad = not 0 < indices <= count
        else:
            bad = indices is not None and (not indices or any(not -count <= i < count for i in indices))
        if bad:
            raise ValueError(
                f"{self.model_name} has {count} {what}: indices {indices!r} do not fit (an int n takes the "
                f"last n, 1 to {count}; a list takes indices from {-count} to {count - 1})"
            )
        if indices is None or isinstance(indices, int):
            take = list(range(count - (count if indices is None else indices), count))
        else:
            take = [i % count for i in indices]
        return take, max(take)

    def check_output_fmt(self, output_fmt: str, allowed: tuple[str, ...]) -> None:
        """A ValueError naming the model unless `output_fmt` of `forward_intermediates` is in `allowed`."""
        if output_fmt not in allowed:
            raise ValueError(f"{self.model_name}: output_fmt must be one of {allowed}, got {output_fmt!r}")


class TokenModel(SimilarityModel):
    """A plain model (ViT, T2T-ViT): an embedding, then blocks on one token grid, the last a `SARBlock`,
    then the final norm. Subclasses implement `_embed(x) -> (tokens, grid)`: [CLS] and the patch tokens
    with their position embedding, as the first block takes them, and the grid of the patches."""

    blocks: nn.Module
    norm: nn.Module
    default_out_indices = 3  # as timm's ViT: features_only takes the last three blocks

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        raise NotImplementedError

    def _tokens(self, x, with_similarity):
        x, grid = self._embed(x)
        x, S, _ = self.run_blocks(x, grid, with_similarity)
        if with_similarity and S is None:
            raise ValueError(f"{self.model_name}: no S, prune_intermediate_layers removed the last block")
        return self.norm(x), S

    def run_blocks(
        self,
        x: torch.Tensor,
        grid: Grid,
        with_similarity: bool = False,
        take: Sequence[int] = (),
        norm: bool = False,
        stop: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]:
        """The tokens after the blocks (up to block `stop`), S, and the outputs of the blocks in `take`
        (through the final norm if `norm`). The `SARBlock` takes the grid; the others are timm's."""
        S, kept = None, []
        blocks = self.blocks if stop is None else self.blocks[: stop + 1]
        for i, block in enumerate(blocks):
            if isinstance(block, SARBlock):
                x, S = self.run_last_block(block, x, grid, with_similarity)
            else:
                x = self.checkpointed(block, x)
            if i in take:
                kept.append(self.norm(x) if norm else x)
        return x, S, kept

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """timm's ViT contract: the outputs of the blocks `indices` (see `take_indices`) as patch maps
        `[B, C, h, w]` ("NCHW") or patch tokens `[B, h*w, C]` ("NLC"), each paired with its [CLS] token
        `[B, 1, C]` if `return_prefix_tokens`, through the final norm if `norm`; and, unless
        `intermediates_only`, first the final tokens (those of `forward_features` when all blocks run)."""
        self.check_output_fmt(output_fmt, ("NCHW", "NLC"))
        take, last = self.take_indices(len(self.blocks), indices, "blocks")
        x, grid = self._embed(x)
        x, _, kept = self.run_blocks(x, grid, take=take, norm=norm, stop=last if stop_early else None)
        if output_fmt == "NCHW":
            patches = [self.patch_grid(y, grid) for y in kept]
        else:
            patches = [y[:, NUM_PREFIX_TOKENS:] for y in kept]
        if return_prefix_tokens:
            patches = list(zip(patches, [y[:, :NUM_PREFIX_TOKENS] for y in kept], strict=True))
        return patches if intermediates_only else (self.norm(x), patches)

    def get_intermediate_layers(
        self,
        x: torch.Tensor,
        n: Indices = 1,
        reshape: bool = False,
        return_prefix_tokens: bool = False,
        norm: bool = False,
    ) -> list[Any]:
        """DINO's interface, as timm's ViT has it: the last `n` blocks (or the blocks `n`). DINO's linear
        probe takes the [CLS] tokens of the last four through the final norm: `n=4,
        return_prefix_tokens=True, norm=True`, then `prefix[:, 0]` of each (patches, prefix) pair."""
        return self.forward_intermediates(
            x,
            n,
            return_prefix_tokens=return_prefix_tokens,
            norm=norm,
            output_fmt="NCHW" if reshape else "NLC",
            intermediates_only=True,
        )

    def prune_intermediate_layers(
        self, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last of `indices` (and the final norm, the classifier) for a feature
        extractor; returns the absolute indices. Without the last block, S is no longer available."""
        take, last = self.take_indices(len(self.blocks), indices, "blocks")
        self.blocks = self.blocks[: last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take


class ClsHeadModel(SimilarityModel):
    """What the models written here (T2T, PVT, CvT) share: a [CLS] token, a linear classifier on it, the
    official codes' initialisation, a square build size `img_size` and grad checkpointing of every block."""

    img_size: int
    in_chans: int
    embed_dim: int
    cls_token: nn.Parameter | None
    first_conv: str  # the module that takes the image (timm's pretrained_cfg["first_conv"])

    def _init_head_and_weights(self, embed_dim: int, num_classes: int) -> None:
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.reset_classifier(num_classes)
        self.apply(init_weights)
        trunc_normal_(self.cls_token, std=0.02)

    @classmethod
    def create(cls, name: str, pretrained: bool, kwargs: dict, **cfg: Any) -> nn.Module:
        """The body of a timm entry point: build, attach a timm-style pretrained_cfg, and wrap for
        `features_only` (see `with_features`)."""
        kwargs, features = split_features(model_kwargs(name, pretrained, kwargs))
        model = build(cls, kwargs)
        model.pretrained_cfg = model.default_cfg = pretrained_cfg(
            (model.in_chans, model.img_size, model.img_size),
            model.first_conv,
            model.num_classes,
            architecture=name,
            **cfg,
        )
        return with_features(model, features)

    @property
    def build_size(self) -> Grid:
        return (self.img_size, self.img_size)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every block's activations (the SAR last block and its S included) in the backward
        pass instead of keeping them. A BatchNorm in a block (CvT's projections) updates its running
        statistics again when recomputed in training, as under any checkpointing."""
        self.grad_checkpointing = enable

    def prepend_cls(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Any = None) -> None:
        """A new classifier for `num_classes` (0: none), on the device and in the dtype of the model's
        parameters, in the model's train/eval mode."""
        self.num_classes = num_classes
        if num_classes <= 0:
            self.head = nn.Identity()
            return
        like = next((p for p in self.parameters() if p.is_floating_point()), None)
        where = {} if like is None else {"device": like.device, "dtype": like.dtype}
        self.head = nn.Linear(self.embed_dim, num_classes, **where).train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        cls = x[:, 0]
        return cls if pre_logits else self.head(cls)


class PyramidModel(ClsHeadModel):
    """A pyramid (PVT, CvT): stages of embedding and blocks at falling resolution; [CLS] joins stage
    `cls_stage` (the last), whose tokens end in the final norm. Subclasses implement `stage_embeds()` (the
    per-stage embeddings, each `x -> (tokens, grid)`) and `keep_stages(n)` (drop all but the first n
    stages with everything per stage), and may add a position embedding per stage (`stage_position`).

    `dense_cls`: whether the [CLS] stage's feature map (`forward_intermediates`, `features_only`) comes
    from that stage run with [CLS] among its tokens, as the classifier runs it, or from the stage run on
    its patch tokens alone (the [CLS] entry of its position embedding left out), as PVT's official
    segmentation backbone does. The final tokens and S always come from the classifier's pass."""

    stages: nn.ModuleList
    cls_stage: int
    dense_cls: bool = True
    pos_drop: nn.Module
    norm: nn.Module

    def stage_embeds(self) -> nn.ModuleList:
        raise NotImplementedError

    def keep_stages(self, n: int) -> None:
        raise NotImplementedError

    def stage_position(self, stage: int, grid: Grid) -> torch.Tensor | None:
        """The position embedding added to stage `stage` whose token grid is `grid` (None: none)."""
        return None

    @property
    def default_out_indices(self) -> tuple[int, ...]:
        return tuple(range(len(self.feature_info)))

    def _tokens(self, x, with_similarity):
        if len(self.stages) <= self.cls_stage:
            raise ValueError(
                f"{self.model_name}: prune_intermediate_layers kept only {len(self.stages)} stages, without "
                "the [CLS] stage: only forward_intermediates works"
            )
        x, S, _ = self.run_stages(x, with_similarity)
        return x, S

    def run_stages(
        self,
        x: torch.Tensor,
        with_similarity: bool = False,
        take: Sequence[int] = (),
        norm: bool = False,
        stop: int | None = None,
        final: bool = True,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor]]:
        """The stages up to `stop`: the last one's output (the final tokens after the final norm once the
        [CLS] stage ran, else its map; None where `final` is False and only the maps were wanted), S, and
        the maps `[B, C, h, w]` of the stages in `take`. Each stage's grid is the one its embedding
        produced from this input; the [CLS] stage's map leaves [CLS] out (see `dense_cls`) and is the one
        before the final norm unless `norm`."""
        self.check_input(x)
        S, maps = None, []
        for i, (embed, blocks) in enumerate(zip(self.stage_embeds(), self.stages, strict=True)):
            if stop is not None and i > stop:
                break
            if i != self.cls_stage:
                tokens, grid, _ = self._run_stage(i, embed, blocks, x, False, True)
                x = fmap = self._to_map(tokens, grid)
                if i in take:
                    maps.append(fmap)
                continue
            dense = None
            if i in take and not self.dense_cls:  # the patch tokens alone, as a segmentation backbone
                dense, grid, _ = self._run_stage(i, embed, blocks, x, False, False)
            if final or dense is None:
                tokens, grid, S = self._run_stage(i, embed, blocks, x, with_similarity, True)
                dense = tokens if dense is None else dense
                x = self.norm(tokens)
            else:
                x = None
            if i in take:
                patches = dense[:, -math.prod(grid) :]
                maps.append(self._to_map(self.norm(patches) if norm else patches, grid))
        return x, S, maps

    @staticmethod
    def _to_map(tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)

    def _run_stage(
        self,
        i: int,
        embed: nn.Module,
        blocks: nn.ModuleList,
        x: torch.Tensor,
        with_similarity: bool,
        cls: bool,
    ) -> tuple[torch.Tensor, Grid, torch.Tensor | None]:
        """Stage i's tokens `[B, (1 +) h*w, C]`, their grid, and S (from the [CLS] stage only). With `cls`
        False the [CLS] stage runs on its patch tokens alone, its position embedding without [CLS]'s
        entry (PVT's segmentation backbone: `pos_embed4[:, 1:]`)."""
        x, grid = embed(x)
        has_cls = cls and i == self.cls_stage
        if has_cls:
            x = self.prepend_cls(x)
        pos = self.stage_position(i, grid)
        if pos is not None and i == self.cls_stage and not has_cls:
            pos = pos[:, 1:]
        x = self.pos_drop(x if pos is None else x + pos)
        for block in blocks[:-1]:
            x = self.checkpointed(block, x, grid)
        x, S = self.run_last_block(blocks[-1], x, grid, with_similarity and has_cls)
        return x, grid, S

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's pyramid contract (as pvt_v2's): the feature maps `[B, C, h, w]` of the stages `indices`
        (see `take_indices`), the [CLS] stage's without [CLS] and through the final norm if `norm`; and,
        unless `intermediates_only`, first the final tokens (those of `forward_features` when all stages
        run)."""
        self.check_output_fmt(output_fmt, ("NCHW",))
        take, last = self.take_indices(len(self.stages), indices, "stages")
        stop = last if stop_early else None
        x, _, maps = self.run_stages(x, take=take, norm=norm, stop=stop, final=not intermediates_only)
        return maps if intermediates_only else (x, maps)

    def prune_intermediate_layers(
        self, indices: Indices = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of `indices` (and the final norm, the classifier) for a feature
        extractor; returns the absolute indices. Dropping the [CLS] stage drops [CLS], the final norm and
        the classifier too: nothing could use them (and DDP refuses unused parameters)."""
        take, last = self.take_indices(len(self.stages), indices, "stages")
        self.keep_stages(last + 1)
        cls_dropped = last < self.cls_stage
        if prune_norm or cls_dropped:
            self.norm = nn.Identity()
        if cls_dropped:
            self.cls_token = None
        if prune_head or cls_dropped:
            self.reset_classifier(0)
        return take


def split_features(kwargs: dict) -> tuple[dict, dict | None]:
    """timm passes `features_only` (and `out_indices`, `feature_cls`, `feature_cfg`) to the entry point: the
    model's own arguments, and the feature request (None: a classifier). The feature net is timm's
    FeatureGetterNet (`feature_cls='getter'`, as timm builds for its ViTs); another is a ValueError."""
    kwargs = dict(kwargs)
    if not kwargs.pop("features_only", False):
        return kwargs, None
    request = {**(kwargs.pop("feature_cfg", None) or {})}
    for key in ("feature_cls", "out_indices"):
        if key in kwargs:
            request[key] = kwargs.pop(key)
    feature_cls = request.pop("feature_cls", "getter")
    if feature_cls != "getter":
        raise ValueError(
            f"features_only: the SAR models give their features through timm's FeatureGetterNet "
            f"(feature_cls='getter'), got feature_cls={feature_cls!r}"
        )
    unknown = set(request) - {"out_indices"}
    if unknown:
        raise ValueError(f"features_only: unsupported feature options {sorted(unknown)}")
    return kwargs, request


def with_features(model: SimilarityModel, features: dict | None) -> nn.Module:
    """The model, or for a feature request timm's `FeatureGetterNet` over its `forward_intermediates`, as
    timm's own ViTs are wrapped (`feature_cls='getter'`): a list of NCHW maps, `feature_info` from the
    model. The wrapper prunes what the maps do not need, so its `.model` lacks the classifier (`head.*`)
    and the final norm (`norm.*`: the maps are taken before it), plus everything after the last of
    `out_indices` (for a pyramid stopping before the [CLS] stage: that stage, `cls_token` and its
    position embedding); all other keys of the classifier's checkpoint load strictly into `.model`.

    timm 1.0 exports no public name for `FeatureGetterNet`: this is the one place that uses it, and
    tests/test_models_intermediates.py checks that it is the class timm wraps its own ViTs in."""
    if features is None:
        return model
    net = FeatureGetterNet(model, out_indices=features.get("out_indices", model.default_out_indices))
    classifier = ("num_classes", "classifier", "global_pool")  # what timm drops from a feature net's config
    config = {key: value for key, value in model.pretrained_cfg.items() if key not in classifier}
    net.pretrained_cfg = net.default_cfg = config
    return net
