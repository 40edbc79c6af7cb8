"""The fine-tuning engine (Tab. 4, Appendix D.3): the supervised loop, started from an upstream run's
backbone with a new head for the target's classes.

As the official SAR command does (`--resume` on a checkpoint stripped to the backbone, not DeiT's
`--finetune`, which trains in eval mode), the model trains in train mode (drop path active) and nothing but
the weights is taken over: optimizer, schedule and epoch start afresh. Every backbone key must fit: the
row keeps the upstream's architecture (last block included), which the recipe resolver checks as well.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from harness import distributed
from harness.core import checkpoint
from harness.engines import supervised
from harness.results import checkpoint_path


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> dict[str, Any]:
    source = checkpoint_path(Path(cfg.upstream.folder), cfg.upstream.checkpoint)
    what = f"upstream run {cfg.upstream.uid} (row '{cfg.upstream.row}' of {cfg.upstream.recipe})"
    weights = checkpoint.load_model(source, what)

    def backbone(model: nn.Module) -> None:
        new_head = checkpoint.classifier_keys(model)
        checkpoint.load_weights(model, weights, f"{what}: {source}", skip=new_head)

    return supervised.run(cfg, uid, world, folder, init=backbone)
