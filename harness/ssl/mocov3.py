"""MoCo-v3 (Chen et al. 2021; facebookresearch/moco-v3 `moco/builder.py`, `vits.py`): a base encoder with
a 3-layer projector and a 2-layer predictor (each ending in a BN without affine, as `MoCo_ViT` builds
them), a momentum encoder (backbone + projector) following it, and the symmetrised InfoNCE loss over the
keys of every process, scaled by 2 tau. The ViT keeps MoCo-v3's changes to the model: a fixed 2-D sin-cos
position embedding, a frozen random patch projection (`--stop-grad-conv1`) and its initialisation."""

import copy
import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def mlp(layers: int, dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """MoCo-v3's `_build_mlp` as its ViT uses it for both the projector (3 layers) and the predictor (2
    layers): Linear (no bias) + BN + ReLU between layers and a BN without affine after the last Linear
    (`last_bn=True`, the default; only `MoCo_ResNet`'s predictor passes False). Source:
    facebookresearch/moco-v3 `moco/builder.py`, `MoCo._build_mlp` and
    `MoCo_ViT._build_projector_and_predictor_mlps`."""
    modules: list[nn.Module] = []
    for layer in range(layers):
        first = dim_in if layer == 0 else hidden
        last = layer == layers - 1
        modules.append(nn.Linear(first, dim_out if last else hidden, bias=False))
        if last:
            modules.append(nn.BatchNorm1d(dim_out, affine=False))
        else:
            modules += [nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)


def sincos_position_embedding(grid: tuple[int, int], dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """`[1, 1 + h*w, dim]`: MoCo-v3's `build_2d_sincos_position_embedding`, a zero row for [CLS] first,
    then per patch (raster order) sin and cos of its first grid coordinate, then of its second, dim/4
    frequencies each (MoCo-v3 names the first `grid_w`; on its square grids that is the row)."""
    if dim % 4:
        raise ValueError(f"the sin-cos position embedding needs an embedding dim divisible by 4, got {dim}")
    h, w = grid
    first, second = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_1, out_2 = first.flatten()[:, None] * omega, second.flatten()[:, None] * omega
    patches = torch.cat([out_1.sin(), out_1.cos(), out_2.sin(), out_2.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), patches])[None]


def prepare_backbone(model: nn.Module, stop_grad_conv1: bool) -> nn.Module:
    """MoCo-v3's `VisionTransformerMoCo.__init__` on a timm ViT built with num_classes=0: xavier-uniform
    linears (qkv as three matrices), [CLS] ~ N(0, 1e-6), the patch projection uniform like a linear of its
    3 * p * p inputs, the fixed sin-cos position embedding; the patch projection frozen if asked."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            if "qkv" in name:
                bound = math.sqrt(6.0 / (module.weight.shape[0] // 3 + module.weight.shape[1]))
                nn.init.uniform_(module.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    nn.init.normal_(model.cls_token, std=1e-6)
    proj = model.patch_embed.proj
    bound = math.sqrt(6.0 / (3 * math.prod(proj.kernel_size) + proj.out_channels))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)
    with torch.no_grad():
        model.pos_embed.copy_(sincos_position_embedding(model.patch_embed.grid_size, model.embed_dim))
    model.pos_embed.requires_grad = False
    if stop_grad_conv1:
        proj.weight.requires_grad = proj.bias.requires_grad = False
    return model


class MoCo(nn.Module):
    """Base encoder (backbone + projector), predictor, and the momentum encoder (a copy of the base
    encoder, never trained by gradients). `forward` gives the loss, L_se of the base encoder's maps of
    both views, and nothing waits for the host."""

    def __init__(self, backbone: nn.Module, mlp_dim: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.backbone = backbone
        self.projector = mlp(3, backbone.embed_dim, mlp_dim, dim)
        self.predictor = mlp(2, dim, mlp_dim, dim)
        self.momentum_backbone = copy.deepcopy(backbone)
        self.momentum_projector = copy.deepcopy(self.projector)
        for param in self.momentum_parameters():
            param.requires_grad = False

    def base_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.projector.parameters()]

    def momentum_parameters(self) -> list[nn.Parameter]:
        return [*self.momentum_backbone.parameters(), *self.momentum_projector.parameters()]

    @torch.no_grad()
    def update_momentum_encoder(self, momentum: float) -> None:
        """param_m = m * param_m + (1 - m) * param_b over the backbone and projector (MoCo-v3's update)."""
        momentum_params = self.momentum_parameters()
        torch._foreach_mul_(momentum_params, momentum)
        torch._foreach_add_(momentum_params, self.base_parameters(), alpha=1 - momentum)

    def _query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, S = self.backbone.forward_features_with_similarity(x)
        return self.predictor(self.projector(self.backbone.forward_head(tokens))), S

    @torch.no_grad()
    def _key(self, x: torch.Tensor) -> torch.Tensor:
        return self.momentum_projector(self.momentum_backbone(x))

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, momentum: float
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(L_ssl, [S of view 1, S of view 2]); the momentum encoder is updated between the queries and
        the keys, as MoCo-v3 does."""
        q1, S1 = self._query(x1)
        q2, S2 = self._query(x2)
        self.update_momentum_encoder(momentum)
        k1, k2 = self._key(x1), self._key(x2)
        loss = contrastive_loss(q1, k2, self.temperature) + contrastive_loss(q2, k1, self.temperature)
        return loss, [S1, S2]


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """2 tau * CE(q . k_all / tau, positives on the diagonal of this process's block): the keys of every
    process are gathered (no gradient), the queries are local. Float32 even under autocast, as DINO's loss
    and L_se are here (MoCo-v3's own code computes it in fp16)."""
    with torch.autocast(q.device.type, enabled=False):
        return _contrastive_loss(q.float(), k.float(), temperature)


def _contrastive_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    rank, keys = 0, k
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered = [torch.empty_like(k) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, k.contiguous())
        rank, keys = dist.get_rank(), torch.cat(gathered)
    logits = q @ keys.T / temperature
    labels = torch.arange(len(q), device=q.device) + len(q) * rank
    return 2 * temperature * F.cross_entropy(logits, labels)
