"""SAR-ready vision transformers, registered with timm: `timm.create_model("sar_vit_small_patch16_224")`.

Every model has `forward_with_similarity(x) -> (logits, S)`, `forward_features(x)` (the final tokens,
[CLS] first), `patch_grid(tokens)` and a `last_block` option (Tab. 1b): `"standard"`, `"no_msa_skip"`,
`"sar"` (the default: Eq. 10-11) and `"no_skips"`.

Inputs need not have the build size: any multiple of `model.size_multiple` works (position embeddings
resized to the input's token grid), S is on that input's own grid (`model.similarity_grid_for((H, W))`),
and a size that cannot work raises a ValueError naming the model and the sizes that do.

timm's contract holds with the SAR last block intact: `forward_intermediates` (per-block outputs for ViT and
T2T-ViT, with `get_intermediate_layers` for DINO's probe; per-stage maps for PVT and CvT),
`prune_intermediate_layers`, `set_grad_checkpointing` (every block, S included) and
`timm.create_model(name, features_only=True, out_indices=...)` (timm's FeatureGetterNet), timm's factory
arguments `device` and `dtype`, and FX tracing (torchvision's `create_feature_extractor` with timm's notrace
lists). timm's own model tests run on them: tests/timm_suite.
"""

from sar.models.base import SimilarityModel
from sar.models.cvt import ConvolutionalVisionTransformer, sar_cvt_13
from sar.models.layers import LAST_BLOCKS, SARBlock
from sar.models.local import LOCAL_KWARGS, local_kwargs
from sar.models.pvt import PyramidVisionTransformer, sar_pvt_small
from sar.models.t2t import T2TViT, sar_t2t_vit_14
from sar.models.vit import SARVisionTransformer, sar_vit_small_patch16_224, sar_vit_tiny_patch16_224

MODEL_NAMES = (
    "sar_vit_tiny_patch16_224",
    "sar_vit_small_patch16_224",
    "sar_t2t_vit_14",
    "sar_pvt_small",
    "sar_cvt_13",
)
"""The timm names of the SAR-ready models registered here, one per family of the paper's experiments."""

__all__ = [
    "LAST_BLOCKS",
    "LOCAL_KWARGS",
    "MODEL_NAMES",
    "ConvolutionalVisionTransformer",
    "PyramidVisionTransformer",
    "SARBlock",
    "SARVisionTransformer",
    "SimilarityModel",
    "T2TViT",
    "local_kwargs",
    "sar_cvt_13",
    "sar_pvt_small",
    "sar_t2t_vit_14",
    "sar_vit_small_patch16_224",
    "sar_vit_tiny_patch16_224",
]
