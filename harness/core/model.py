"""The model of a run, built through timm's registry, and its SAR forward."""

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sar
from harness import distributed


class WithSimilarity(nn.Module):
    """Makes `forward` return (logits, S), so that DDP sees the SAR forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_similarity(x)


def build_model(cfg: DictConfig, classes: int, device: torch.device) -> nn.Module:
    return timm.create_model(
        cfg.model,
        num_classes=classes,
        last_block=cfg.last_block,
        drop_path_rate=cfg.protocol.drop_path,
        **OmegaConf.to_container(cfg.model_kwargs),
    ).to(device)


def for_training(model: nn.Module, world: distributed.World) -> nn.Module:
    """The SAR forward, wrapped in DDP when there are several processes."""
    net: nn.Module = WithSimilarity(model)
    if world.size > 1:
        ids = [world.local_rank] if world.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=ids)
    return net


def aux_loss(cfg: DictConfig, S: torch.Tensor) -> torch.Tensor:
    """L_se (Eq. 9) or the total-variation variant (Eq. 14, Appendix B) of the similarity maps S."""
    return sar.tv_loss(S) if cfg.loss.variant == "tv" else sar.spatial_entropy(S)
