"""Semantic FPN (Kirillov et al., 2019) as mmseg v0.13 builds it for PVT's `fpn_pvt_s_ade20k_40k.py`:
the backbone's four stage maps, an FPN neck (1x1 laterals, nearest top-down sums, 3x3 outputs, no norm),
and FPNHead (per level 3x3 conv-BN-ReLU blocks, each followed by a 2x bilinear upsampling, until the finest
level's stride; summed, dropout 0.1, a 1x1 classifier). Initialised as mmseg does: the neck's convolutions
xavier-uniform, the head's kaiming-normal (fan out), the classifier normal(0, 0.01)."""

import math

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn


class FPNNeck(nn.Module):
    """mmseg's FPN with `num_outs` = the number of inputs: one `channels`-wide map per backbone stage."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight)
                nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):  # coarse to fine
            top_down = F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + top_down
        return [conv(x) for conv, x in zip(self.output, laterals, strict=True)]


class FPNHead(nn.Module):
    """Every level brought to the finest level's stride and summed; then dropout and the classifier.
    A level of stride s gets max(1, log2(s / s_0)) conv-BN-ReLU blocks, each followed by a 2x upsampling
    when s != s_0 (the sum resizes to the finest map, so strides need not be powers of two apart)."""

    def __init__(
        self, in_channels: int, strides: list[int], channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride in strides:
            blocks: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(strides[0])))):
                blocks.append(ConvNormAct(in_channels if k == 0 else channels, channels, 3))
                if stride != strides[0]:
                    blocks.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*blocks))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        for conv in self.scale_heads.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](features[0])
        for head, x in zip(self.scale_heads[1:], features[1:], strict=True):
            out = out + F.interpolate(head(x), size=out.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.dropout(out))


class SemanticFPN(nn.Module):
    """Backbone stage maps -> FPN neck -> FPNHead; `forward` returns logits at the input's size (bilinear,
    `align_corners=False`, as mmseg resizes them to the labels). The backbone is a timm model with the
    `forward_intermediates` contract (`harness.segment.backbone`)."""

    def __init__(
        self,
        backbone: nn.Module,
        channels: list[int],
        strides: list[int],
        num_classes: int,
        neck_channels: int,
        head_channels: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.stages = len(channels)
        self.neck = FPNNeck(channels, neck_channels)
        self.head = FPNHead(neck_channels, strides, head_channels, num_classes, dropout)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone.forward_intermediates(images, indices=self.stages, intermediates_only=True)
        logits = self.head(self.neck(features))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
