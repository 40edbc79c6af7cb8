"""timm's own ViT-family models as harness models: a recipe row may name any model of `TIMM_FAMILIES`
(`vit_*` with or without registers, `deit_*` and distilled DeiT, `deit3_*`, `eva02_*`, `beit_*`), built by
timm with random weights and given its last block by `sar.attach`.

`sar.attach` gives the model `forward_with_similarity` (logits and S) and `similarity_grid_for`; the
engines call what the registered `sar_*` models have beside these (`sar.models.SimilarityModel`):
`forward_features_with_similarity` (tokens and S, for DRLoc's head next to the classifier's),
`set_similarity`, `feature_grid_for` and `patch_grid`. `Harnessed` adds them, as attach adds its own: one
subclass per model class, so the model keeps its class, parameters and timm methods.

Nothing downloads: `pretrained: true` is refused; `model_kwargs.pretrained_file` names a local weights
file (timm's `pretrained_cfg_overlay={"file": ...}`), loaded before the last block is replaced.
"""

import fnmatch
import functools
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import get_arch_name
from torch import nn

import sar
from sar.attach import AttachedModel, _attached_instance
from sar.models import MODEL_NAMES
from sar.models.layers import Grid
from sar.models.local import TIMM_FAMILIES

PRETRAINED_FILE = "pretrained_file"  # model_kwargs key: local weights for a timm family model
PRETRAINED_HINT = (
    f"nothing is downloaded: set model_kwargs.{PRETRAINED_FILE}: /path/to/weights.safetensors (or .pth; "
    "timm loads it through pretrained_cfg_overlay={'file': ...}) instead of model_kwargs.pretrained"
)


def is_timm_family(model: str) -> bool:
    """Whether `model` names a timm model of the families `sar.attach` takes (not a registered sar_*)."""
    return model not in MODEL_NAMES and any(
        fnmatch.fnmatchcase(get_arch_name(model), p) for p in TIMM_FAMILIES
    )


def pretrained_problem(model_kwargs: dict[str, Any]) -> str | None:
    """Why the row's weights cannot be had without a download, or None."""
    if model_kwargs.get("pretrained"):
        return PRETRAINED_HINT
    file = model_kwargs.get(PRETRAINED_FILE)
    if file is not None and not Path(str(file)).expanduser().is_file():
        return f"model_kwargs.{PRETRAINED_FILE}: {file} is not a file"
    return None


class Harnessed(nn.Module):
    """What the engines call on a model beyond `sar.attach`'s `forward_with_similarity` and
    `forward_features_with_similarity` (the interface of `sar.models.SimilarityModel`), for a model that
    `sar.attach` gave its last block."""

    def set_similarity(self, kind: str) -> None:
        """S is Eq. 4's dot product (the attention's own logits): `sar.attach` has no cosine S (Eq. 15)."""
        if kind != "dot":
            raise ValueError(
                f"{type(self).__name__}: sar.attach's last block gives the dot-product S of Eq. 4 only, not "
                f"{kind!r}; loss.similarity=cosine needs a registered sar_* model"
            )

    def feature_grid_for(self, size: Grid) -> Grid:
        """The final patch-token grid of an input of spatial size (H, W): the patch grid, as S's."""
        return self.similarity_grid_for(size)

    def patch_grid(self, tokens: torch.Tensor, grid: Grid | None = None) -> torch.Tensor:
        """The patch tokens of `forward_features_with_similarity` as a map `[B, C, h, w]` (prefix tokens
        dropped: [CLS], registers, the distillation token)."""
        h, w = tuple(self.patch_embed.grid_size) if grid is None else grid
        if tokens.dim() != 3 or tokens.shape[1] != self.num_prefix_tokens + h * w:
            raise ValueError(
                f"{type(self).__name__}.patch_grid: tokens {tuple(tokens.shape)} are not "
                f"{self.num_prefix_tokens} prefix tokens + a {h}x{w} grid; pass grid=feature_grid_for(size)"
            )
        return tokens[:, -h * w :].transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    def __reduce_ex__(self, protocol: int) -> tuple:
        """Deepcopy (the EMA's copy, MoCo-v3's momentum encoder) and pickle by the model's timm class:
        neither this class nor attach's has an importable name, and attach's own `__reduce_ex__` would
        take `Harnessed` for the timm class."""
        base = next(c for c in type(self).__mro__ if not issubclass(c, (Harnessed, AttachedModel)))
        return _harnessed_instance, (base,), self.__getstate__()


@functools.cache
def _harnessed_class(cls: type[nn.Module]) -> type[nn.Module]:
    return type(f"{cls.__name__}Harnessed", (Harnessed, cls), {"__module__": __name__})


def _harnessed_instance(base: type[nn.Module]) -> nn.Module:
    """An empty instance of timm class `base` with SAR attached and harnessed, for pickle to fill in."""
    return object.__new__(_harnessed_class(type(_attached_instance(base))))


def build(
    model: str, classes: int, last_block: str, drop_path: float, model_kwargs: dict[str, Any], input_size: int
) -> nn.Module:
    """timm's `model` for `classes` classes (0: no head) at `input_size` px (unless model_kwargs sets
    img_size: timm's own sizes run from 224 to 518), with SAR's `last_block` attached."""
    kwargs = {"img_size": input_size, **model_kwargs}
    problem = pretrained_problem(kwargs)
    if problem is not None:
        raise ValueError(f"{model}: {problem}")
    file = kwargs.pop(PRETRAINED_FILE, None)
    if file is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(Path(str(file)).expanduser())})
    net = sar.attach(
        timm.create_model(model, num_classes=classes, drop_path_rate=drop_path, **kwargs), last_block
    )
    net.__class__ = _harnessed_class(type(net))
    return net
