"""The fine-tuning engine (Tab. 4, Appendix D.3): the supervised loop, started from an upstream run's
backbone with a new head for the target's classes.

As the official SAR command does (`--resume` on a checkpoint stripped to the backbone, not DeiT's
`--finetune`, which trains in eval mode), the model trains in train mode (drop path active) and nothing but
the weights is taken over: optimizer, schedule and epoch start afresh. Every backbone key must fit: the
row keeps the upstream's architecture (last block included), which the recipe resolver checks as well.
"""

from pathlib import Path

from omegaconf import DictConfig
from torch import nn

from harness import distributed
from harness.config.protocols import SupervisedProtocol
from harness.core import checkpoint
from harness.core.result import Outcome
from harness.engines import supervised
from harness.engines.spec import Consumes, EngineSpec, Progress, Provides


def run(cfg: DictConfig, uid: str, world: distributed.World, folder: Path) -> Outcome:
    def backbone(model: nn.Module) -> None:
        checkpoint.load_upstream(model, cfg.upstream, skip=checkpoint.classifier_keys(model))  # a new head

    return supervised.run(cfg, uid, world, folder, init=backbone)


SPEC = EngineSpec(
    name="finetune",
    run=run,
    protocol=SupervisedProtocol,
    description="fine-tunes an upstream run's backbone with a new head (Tab. 4)",
    consumes=Consumes.backbone,
    provides=Provides.classifier,
    progress=Progress.epoch,
    loss="ce",
    cost=supervised.SPEC.cost,
    metrics=supervised.SPEC.metrics,
    activity="fine-tuning",
    validates=True,
)
