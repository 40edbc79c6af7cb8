"""One module per kind of job, each readable top to bottom: `supervised` (training from scratch, Tabs. 1-3,
7, 8), `finetune` (from an upstream run's backbone, Tab. 4) and `evaluate` (an upstream run's model on
evaluation-only datasets, Tabs. 5, 6, 9b), `segmentation` (a Semantic FPN on an upstream run's PVT, Tab.
12), `mocov3` and `dino` (self-supervised pre-training, Tab. 9) and `linear_probe` (a linear classifier on
a frozen pre-trained backbone, Tab. 9a). A run's `engine` field names its engine; `train_run` is the job
entry point every launcher calls."""

from typing import Any

from harness.core.job import Engine, run_job
from harness.engines import dino, evaluate, finetune, linear_probe, mocov3, segmentation, supervised

ENGINES: dict[str, Engine] = {
    "supervised": supervised.run,
    "finetune": finetune.run,
    "evaluate": evaluate.run,
    "segmentation": segmentation.run,
    "mocov3": mocov3.run,
    "dino": dino.run,
    "linear_probe": linear_probe.run,
}


def train_run(config: dict[str, Any], uid: str) -> dict[str, Any]:
    """Run one resolved run (a `harness.config.schema.Run` as a dict) with its engine; returns its result."""
    return run_job(ENGINES[config["engine"]], config, uid)
