"""Live progress of a whole table trained on this machine (inline or local launcher): runs done / total,
the current run's epoch and step, images/s and an ETA, read from the run's heartbeat by a polling thread,
so that it works the same whether the run trains in this process or in a submitit job."""

import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from tqdm import tqdm

from harness.records import HEARTBEAT, read_object

POLL_S = 0.5


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TableProgress:
    """`with TableProgress(n) as progress:` then `progress.start(folder, label)` for each run and
    `progress.finish()` when it ends."""

    def __init__(
        self, total: int, log: Callable[[str], None], stream: IO[str] | None = None, enabled: bool = True
    ) -> None:
        self.total, self.enabled, self.log = total, enabled, log
        self.bar = tqdm(total=total, unit="run", file=stream, disable=not enabled, dynamic_ncols=True)
        self.folder: Path | None = None
        self.label = ""
        self.run_started, self.run_started_at = time.monotonic(), time.time()
        self.durations: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "TableProgress":
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()
        self.bar.close()

    def start(self, folder: Path, label: str) -> None:
        self.folder, self.label = folder, label
        self.run_started, self.run_started_at = time.monotonic(), time.time()
        self.bar.set_description_str(label, refresh=True)

    def write(self, line: str) -> None:
        """A log line above the bar (a plain print would tear it)."""
        if self.enabled:
            self.bar.write(line, file=self.bar.fp)
        else:
            self.log(line)

    def finish(self) -> None:
        self.durations.append(time.monotonic() - self.run_started)
        self.folder = None
        self.bar.update(1)

    def describe(self, beat: dict) -> str:
        """`epoch e/E step s/S, N img/s, ETA h:mm:ss` of the current run (and of the table after it)."""
        epoch, epochs, step, steps = (int(beat.get(k, 0)) for k in ("epoch", "epochs", "step", "steps"))
        if not (epochs and steps):
            return ""
        done = ((epoch - 1) * steps + step) / (epochs * steps)
        elapsed = time.monotonic() - self.run_started
        left = elapsed * (1 - done) / done if done else 0.0
        per_run = sum(self.durations) / len(self.durations) if self.durations else elapsed + left
        after = per_run * max(0, self.total - len(self.durations) - 1)
        return (
            f"epoch {epoch}/{epochs} step {step}/{steps}, {beat.get('images_per_s', 0):.0f} img/s, "
            f"run ETA {_clock(left)}, table ETA {_clock(left + after)}"
        )

    def _poll(self) -> None:
        while not self.stop.wait(POLL_S):
            folder = self.folder
            beat = read_object(folder / HEARTBEAT)[0] if folder is not None else None
            if beat is not None and beat.get("time", 0) >= self.run_started_at:  # not an earlier start's
                self.bar.set_description_str(f"{self.label} {self.describe(beat)}", refresh=True)
