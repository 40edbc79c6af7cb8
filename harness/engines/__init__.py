"""One module per kind of job, each readable top to bottom and ending with its `SPEC` (harness.engines.spec):
`supervised` (training from scratch, Tabs. 1-3, 7, 8), `finetune` (from an upstream run's backbone, Tab. 4)
and `evaluate` (an upstream run's model on evaluation-only datasets, Tabs. 5, 6, 9b), `segmentation` (a
Semantic FPN on an upstream run's PVT, Tab. 12), `mocov3` and `dino` (self-supervised pre-training, Tab. 9)
and `linear_probe` (a linear classifier on a frozen pre-trained backbone, Tab. 9a). A run's `engine` field
names its engine; `train_run` is the job entry point every launcher calls. A new engine is one module here
that ends with its SPEC: it is found and registered on import."""

import importlib
import pkgutil
from typing import Any

from harness.core.job import run_job
from harness.core.result import Result
from harness.engines.spec import register, spec_of

for _info in pkgutil.iter_modules(__path__):  # every module of this package that declares a SPEC
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    if hasattr(_module, "SPEC"):
        register(_module.SPEC)


def train_run(config: dict[str, Any], uid: str) -> Result:
    """Run one resolved run (a `harness.config.schema.Run` as a dict) with its engine; returns its result."""
    return run_job(spec_of(config["engine"]).run, config, uid)
