"""SAR: the spatial-entropy regularizer for Vision Transformers (Peruzzo et al.).

    import sar
    loss = ce + 0.01 * sar.spatial_entropy(S)

`S` are the last block's [CLS]-query similarity maps `[B, H, k, k]` (Eq. 4); see `sar.cls_similarity`.
"""

from sar.entropy import cls_similarity, spatial_entropy, tv_loss
from sar.labeling import connected_components

__all__ = ["cls_similarity", "connected_components", "spatial_entropy", "tv_loss"]
__version__ = "0.1.0"
