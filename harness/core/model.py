"""The model of a run, built through timm's registry, and its training forward: logits, the similarity
maps S, and the DRLoc loss where the run adds it."""

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import sar
from harness import distributed
from harness.core import anyvit, syncbn


class Training(nn.Module):
    """`forward` returns (logits, S, DRLoc loss or None) from one pass, so that DDP sees all of it. The DRLoc
    head lives here, not in the model: it is trained with it (the optimizer and DDP see its parameters)
    but is no part of what downstream runs load."""

    def __init__(self, model: nn.Module, drloc_pairs: int | None) -> None:
        super().__init__()
        self.model = model
        self.drloc = None if drloc_pairs is None else sar.DenseRelativeLoc(model.embed_dim, pairs=drloc_pairs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        tokens, S = self.model.forward_features_with_similarity(x)
        logits = self.model.forward_head(tokens)
        if self.drloc is None:
            return logits, S, None
        grid = self.model.patch_grid(tokens, self.model.feature_grid_for(x.shape[-2:]))
        return logits, S, self.drloc(grid)

    def no_weight_decay(self) -> set[str]:
        """The model's own exemptions (position embeddings, tokens), under this module's names."""
        return {f"model.{name}" for name in self.model.no_weight_decay()}


def build_model(cfg: DictConfig, classes: int, device: torch.device) -> nn.Module:
    """The run's model: a registered sar_* model, or a timm ViT-family model with SAR attached
    (`harness.core.anyvit`), at the run's input size."""
    kwargs = OmegaConf.to_container(cfg.model_kwargs)
    if anyvit.is_timm_family(cfg.model):
        model = anyvit.build(
            cfg.model, classes, cfg.last_block, cfg.protocol.drop_path, kwargs, cfg.data.input_size
        )
    else:
        model = timm.create_model(
            cfg.model,
            num_classes=classes,
            last_block=cfg.last_block,
            drop_path_rate=cfg.protocol.drop_path,
            **kwargs,
        )
    model = model.to(device)
    model.set_similarity(cfg.loss.similarity)
    return model


def for_training(model: nn.Module, cfg: DictConfig, world: distributed.World) -> tuple[Training, nn.Module]:
    """The training module (model + auxiliary heads, what the optimizer sees) and the module to call."""
    training = Training(model, cfg.loss.drloc_pairs if cfg.loss.drloc_weight > 0 else None).to(world.device)
    return training, parallel(training, world)


def parallel(module: nn.Module, world: distributed.World, sync_batchnorm: bool = False) -> nn.Module:
    """What a training loop calls: `module` itself in one process, else `module` in DDP, its BatchNorms
    first synchronised across the processes where `sync_batchnorm` (`harness.core.syncbn`, on any device;
    they are replaced in place: the parameters, and so the optimizer's, stay those of `module`)."""
    if world.size == 1:
        return module
    if sync_batchnorm:
        module = syncbn.convert(module, world.device)
    ids = [world.local_rank] if world.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def aux_loss(cfg: DictConfig, S: torch.Tensor) -> torch.Tensor:
    """L_se (Eq. 9) or the total-variation variant (Eq. 14, Appendix B) of the similarity maps S."""
    return sar.tv_loss(S) if cfg.loss.variant == "tv" else sar.spatial_entropy(S)
