"""The segmenter of a run: the upstream classifier's architecture (model, model_kwargs, last block) with
the upstream checkpoint's weights, pruned to its stage maps, under a Semantic FPN. The [CLS] stage's map
comes from its patch tokens alone unless protocol.segmentation.backbone_cls (PVT's segmentation backbone
ignores the classifier's `cls_token`; it is then among the unused keys).

The checkpoint must fit the whole classifier but its head (checked key by key, shapes included: a SAR
checkpoint into a standard last block is refused naming `norm2`), and only then are the final norm and
the head pruned (timm's `prune_intermediate_layers`): the keys so dropped are returned, for result.json.
PVT's code loads its pretrained weights with `strict=False`, which would load a mismatch silently."""

import timm
import torch
from omegaconf import DictConfig, OmegaConf

from harness.core import checkpoint
from harness.segment.fpn import SemanticFPN


def build_segmenter(
    cfg: DictConfig, classes: int, weights: dict[str, torch.Tensor], source: str
) -> tuple[SemanticFPN, list[str]]:
    """The model (on the CPU) and the sorted checkpoint keys it does not use (head and final norm)."""
    seg = cfg.protocol.segmentation
    backbone = timm.create_model(
        cfg.model,
        num_classes=1,  # any head: its keys are skipped, then pruned
        last_block=cfg.last_block,
        drop_path_rate=cfg.protocol.drop_path,
        dense_cls=seg.backbone_cls,
        **OmegaConf.to_container(cfg.model_kwargs),
    )
    checkpoint.load_weights(backbone, weights, source, skip=checkpoint.classifier_keys(backbone))
    stages = len(backbone.feature_info)
    before = set(backbone.state_dict())
    backbone.prune_intermediate_layers(stages, prune_norm=True, prune_head=True)
    if not seg.backbone_cls:  # the maps never read [CLS]; an unused parameter would stop DDP
        backbone.cls_token = None
    unused = sorted(before - set(backbone.state_dict()))
    model = SemanticFPN(
        backbone,
        channels=[info["num_chs"] for info in backbone.feature_info],
        strides=[info["reduction"] for info in backbone.feature_info],
        num_classes=classes,
        neck_channels=seg.neck_channels,
        head_channels=seg.head_channels,
        dropout=seg.dropout,
    )
    return model, unused
