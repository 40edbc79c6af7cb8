"""DINO (Caron et al. 2021; facebookresearch/dino `vision_transformer.py`, `main_dino.py`, `utils.py`): the
projection head, the multi-crop wrapper, the teacher-centred self-distillation loss and the EMA teacher.
The student also returns the last block's similarity maps S of every crop, one tensor per crop size, for
L_se."""

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

GLOBAL_CROPS = 2  # the teacher sees the two global crops only


class Head(nn.Module):
    """DINOHead: a 3-layer MLP (GELU, no BN) to a bottleneck, L2-normalised, then a weight-normalised
    linear layer to `out_dim` prototypes whose norm g is 1 and, with `norm_last_layer`, frozen."""

    def __init__(
        self, dim_in: int, out_dim: int, hidden_dim: int, bottleneck_dim: int, norm_last_layer: bool
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim_in, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            norm.fill_(1.0)
        norm.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 under any autocast: the outputs are divided by temperatures of 0.04-0.1, and DINO's
        prototypes are 65,536 logits whose softmax half precision would coarsen."""
        with torch.autocast(x.device.type, enabled=False):
            return self.last_layer(F.normalize(self.mlp(x.float()), dim=-1, p=2))


class MultiCrop(nn.Module):
    """DINO's MultiCropWrapper: the backbone runs once per run of consecutive crops of one size (global,
    then local), the head once on every [CLS]. The maps S of the runs among the first `similarity_crops`
    crops come back with it, one tensor per run (for L_se)."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(
        self, crops: list[torch.Tensor], similarity_crops: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features, maps = [], []
        start = 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            batch = torch.cat(crops[start:end])
            if start < similarity_crops:
                tokens, S = self.backbone.forward_features_with_similarity(batch)
                maps.append(S)
            else:
                tokens = self.backbone.forward_features(batch)
            features.append(self.backbone.forward_head(tokens))
            start = end
        return self.head(torch.cat(features)), maps


def prepare_backbone(model: nn.Module) -> nn.Module:
    """DINO's `VisionTransformer.__init__` on a timm ViT: [CLS] ~ trunc_normal(std 0.02) where timm draws
    N(0, 1e-6); the rest of its initialisation is timm's already (position embedding trunc_normal 0.02,
    linears trunc_normal 0.02 with zero biases, LayerNorms 1 and 0)."""
    trunc_normal_(model.cls_token, std=0.02)
    return model


def teacher_of(student: MultiCrop, backbone: nn.Module) -> MultiCrop:
    """The teacher: `backbone` (built like the student's, without drop path) and a copy of the student's
    head, loaded with the student's weights, never trained by gradients."""
    teacher = MultiCrop(backbone, copy.deepcopy(student.head))
    teacher.load_state_dict(student.state_dict())
    for param in teacher.parameters():
        param.requires_grad = False
    return teacher


@torch.no_grad()
def update_teacher(student: nn.Module, teacher: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student, parameter by parameter (DINO's EMA)."""
    teacher_params = list(teacher.parameters())
    torch._foreach_mul_(teacher_params, momentum)
    torch._foreach_add_(teacher_params, list(student.parameters()), alpha=1 - momentum)


class Loss(nn.Module):
    """DINOLoss: the cross-entropy between the teacher's centred, sharpened softmax of each global crop and
    the student's softmax (temperature `student_temp`) of every other crop, averaged over the pairs; then
    the centre moves towards the teacher's batch mean (summed over processes) with `center_momentum`. The
    centre is a buffer: checkpoints carry it."""

    def __init__(self, out_dim: int, crops: int, student_temp: float, center_momentum: float) -> None:
        super().__init__()
        self.crops, self.student_temp, self.center_momentum = crops, student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """`student`: the head outputs of every crop, crop after crop; `teacher`: the global crops'.
        Float32 under any autocast, as the head."""
        with torch.autocast(student.device.type, enabled=False):
            return self._forward(student, teacher, teacher_temp)

    def _forward(self, student: torch.Tensor, teacher: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        crops = student.float().div(self.student_temp).chunk(self.crops)
        targets = F.softmax((teacher.float() - self.center) / teacher_temp, dim=-1).chunk(GLOBAL_CROPS)
        total, pairs = student.new_zeros((), dtype=torch.float32), 0
        for t, target in enumerate(targets):
            for s, crop in enumerate(crops):
                if s == t:
                    continue
                total = total + torch.sum(-target * F.log_softmax(crop, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(teacher)
        return total / pairs

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        batch_sum = teacher.float().sum(dim=0, keepdim=True)
        count = len(teacher)
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_sum)
            count *= dist.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1 - self.center_momentum)
