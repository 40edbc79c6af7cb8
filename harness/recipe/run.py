"""A resolved run: its config, the table rows it fills, the run it consumes, and its folder in the store."""

import functools
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from harness.config.identity import run_folder
from harness.engines.spec import Progress, spec_of


@dataclass
class ResolvedRun:
    uid: str
    row_config: DictConfig  # the resolved `Run` of the row, for its first seed
    seed: int
    rows: list[str] = field(default_factory=list)  # every table row this run fills (identical rows share it)
    sweeps: list[tuple[str, ...]] = field(default_factory=list)  # the sweep points (`-m`) that give this run
    upstream: "ResolvedRun | None" = None  # the run this one fine-tunes or evaluates (same seed)

    @functools.cached_property
    def config(self) -> DictConfig:
        """The full `Run` of this seed (a copy only where it differs from the row's: copies are slow)."""
        same_upstream = self.upstream is None or self.row_config.upstream.uid == self.upstream.uid
        if self.seed == self.row_config.seed and same_upstream:
            return self.row_config
        config = self.row_config.copy()
        config.seed = self.seed
        if self.upstream is not None:
            config.upstream.uid, config.upstream.folder = self.upstream.uid, str(self.upstream.folder)
        return config

    @property
    def table(self) -> str:
        return self.row_config.table

    @property
    def folder(self) -> Path:
        """Its folder in the store (harness.config.identity.run_folder): the row of the row config is the
        first of `rows`, as the worker names it too."""
        return run_folder(Path(self.row_config.runs_root) / self.table, self.rows[0], self.seed, self.uid)


def datasets_of(config: DictConfig) -> list[tuple[str, str | None, str]]:
    """(dataset, root, the key that sets the root) of every dataset a run reads: an evaluation reads its
    metrics' evaluation sets (their roots in `eval.roots`) and not its upstream's training set."""
    from harness.eval import EVALUATIONS

    if spec_of(config.engine).progress is not Progress.none or config.data.dataset == "synthetic":
        return [(config.data.dataset, config.data.root, "data.root")]
    names = dict.fromkeys(EVALUATIONS[metric] for metric in config.eval.metrics)
    return [(name, config.eval.roots.get(name), f"+eval.roots.{name}") for name in names]
