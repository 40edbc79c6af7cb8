"""The run's metrics: one JSON line per epoch in metrics.jsonl (what reports read) and the same numbers,
plus per-step training curves, in TensorBoard event files in the run folder (what a user watches)."""

from pathlib import Path
from typing import Any

from harness.results import append_metrics, rewrite_metrics


class RunLog:
    """Written by rank 0 only. On resume the log is cut back to the checkpoint: metrics.jsonl is rewritten
    from the checkpoint's records and TensorBoard purges events logged after the checkpoint's step."""

    def __init__(
        self, folder: Path, enabled: bool, tensorboard: bool, records: list[dict[str, Any]], step: int
    ):
        self.folder, self.enabled, self.writer = folder, enabled, None
        if not enabled:
            return
        rewrite_metrics(folder, records)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only where it is used

            self.writer = SummaryWriter(str(folder), purge_step=step if step else None)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Per-step curves (train/loss, train/se, lr, ...), every `train.log_every` steps."""
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def epoch(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_metrics(self.folder, record)
        if self.writer is not None:
            for name, value in record.items():
                if name.startswith("val_") and isinstance(value, int | float):
                    self.writer.add_scalar(f"val/{name.removeprefix('val_')}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
