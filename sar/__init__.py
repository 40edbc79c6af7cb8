"""SAR: the spatial-entropy regularizer for Vision Transformers (Peruzzo et al.).

    import sar
    loss = ce + 0.01 * sar.spatial_entropy(S)

`S` are the last block's [CLS]-query similarity maps `[B, H, k, k]` (Eq. 4): from a SAR-ready model,

    model = timm.create_model("sar_vit_small_patch16_224", num_classes=100)
    logits, S = model.forward_with_similarity(images)

from a timm ViT you already have, `model = sar.attach(model)`, or from your own model's last-block q and k
with `sar.cls_similarity`.
"""

from sar import models  # registers the SAR-ready models with timm
from sar.attach import attach
from sar.drloc import DenseRelativeLoc
from sar.entropy import cls_similarity, spatial_entropy, tv_loss
from sar.labeling import connected_components

__all__ = [
    "DenseRelativeLoc",
    "attach",
    "cls_similarity",
    "connected_components",
    "models",
    "spatial_entropy",
    "tv_loss",
]
__version__ = "0.1.0"
