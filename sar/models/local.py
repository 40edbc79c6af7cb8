"""Small members of each family for `local`-scale runs: 64x64 inputs, S on an 8x8 grid, a few blocks.

They keep what SAR touches (a [CLS] token, the last block, several heads, the family's own attention) so
that a whole table's pipeline runs on a laptop CPU in minutes. They are not the paper's models: numbers
from them are local-scale numbers.

timm's own ViT families that `sar.attach` takes (`TIMM_FAMILIES`) get one member each, the width, depth
and heads of the local ViT-S with its 64-px input on an 8x8 grid, everything else the architecture's own
(registers, layer scale, q/k norms, rotary embedding, relative position bias, distillation token): timm's
registered constructors take these arguments over their own.
"""

from typing import Any

import timm

LOCAL_IMG_SIZE = 64
# timm's names of the families `sar.attach` takes: ViT (with registers: vit_*_reg4_*), DeiT and
# distilled DeiT, DeiT-III, EVA-02 and BEiT
TIMM_FAMILIES = ("vit_*", "deit_*", "deit3_*", "eva02_*", "beit_*")
TIMM_LOCAL_KWARGS: dict[str, Any] = {
    "img_size": LOCAL_IMG_SIZE,
    "patch_size": 8,
    "embed_dim": 144,
    "depth": 4,
    "num_heads": 6,
}

LOCAL_KWARGS: dict[str, dict[str, Any]] = {
    "sar_vit_tiny_patch16_224": {
        "img_size": LOCAL_IMG_SIZE,
        "patch_size": 8,
        "embed_dim": 96,
        "depth": 4,
        "num_heads": 3,
    },
    "sar_vit_small_patch16_224": {
        "img_size": LOCAL_IMG_SIZE,
        "patch_size": 8,
        "embed_dim": 144,
        "depth": 4,
        "num_heads": 6,
    },
    # T2T's own first soft split (7x7, stride 4, padding 2), then 3x3 at stride 2 and 1: an 8x8 grid
    "sar_t2t_vit_14": {
        "img_size": LOCAL_IMG_SIZE,
        "t2t_strides": (4, 2, 1),
        "t2t_paddings": (2, 1, 1),
        "token_dim": 16,
        "embed_dim": 192,
        "depth": 4,
        "num_heads": 6,
    },
    "sar_pvt_small": {
        "img_size": LOCAL_IMG_SIZE,
        "patch_sizes": (2, 2, 2, 1),
        "embed_dims": (32, 64, 96, 128),
        "num_heads": (1, 2, 3, 4),
        "depths": (1, 1, 1, 2),
        "sr_ratios": (4, 2, 2, 1),
    },
    # CvT-13's own first embedding (7x7, stride 4), then stride 1: a 16x16 grid, whose keys CvT's strided
    # key projection halves to S's 8x8; three narrow stages, as its step costs several times ViT-S's at equal
    # width (measured: docs/local-scale.md, "Where the time goes")
    "sar_cvt_13": {
        "img_size": LOCAL_IMG_SIZE,
        "patch_sizes": (7, 3, 3),
        "patch_strides": (4, 1, 1),
        "patch_paddings": (2, 1, 1),
        "embed_dims": (32, 64, 128),
        "num_heads": (1, 2, 4),
        "depths": (1, 1, 2),
    },
    **{name: dict(TIMM_LOCAL_KWARGS) for name in timm.list_models(TIMM_FAMILIES)},
}
"""Registered model name -> the architecture arguments of its local-scale member (`local_kwargs` copies)."""


def local_kwargs(name: str) -> dict[str, Any]:
    """The architecture arguments that turn registered model `name` into its local-scale member."""
    if name not in LOCAL_KWARGS:
        sar_models = ", ".join(n for n in LOCAL_KWARGS if n.startswith("sar_"))
        raise KeyError(
            f"no local-scale configuration for model {name!r}; known: {sar_models} and timm's "
            f"{', '.join(TIMM_FAMILIES)} (architecture names, without a pretrained tag)"
        )
    return dict(LOCAL_KWARGS[name])
