"""One module per kind of job, each readable top to bottom: `supervised` (training from scratch, Tabs. 1-3,
7, 8), `finetune` (from an upstream run's backbone, Tab. 4) and `evaluate` (an upstream run's model on
evaluation-only datasets, Tabs. 5, 6). A run's `engine` field names its engine; `train_run` is the job
entry point every launcher calls."""

from typing import Any

from harness.core.job import Engine, run_job
from harness.engines import evaluate, finetune, supervised

ENGINES: dict[str, Engine] = {
    "supervised": supervised.run,
    "finetune": finetune.run,
    "evaluate": evaluate.run,
}


def train_run(config: dict[str, Any], uid: str) -> dict[str, Any]:
    """Run one resolved run (a `harness.config.schema.Run` as a dict) with its engine; returns its result."""
    return run_job(ENGINES[config["engine"]], config, uid)
