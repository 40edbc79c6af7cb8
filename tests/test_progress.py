"""Progress a person can see: the table's live progress line and `status --watch`."""

import io
import json
import socket
import subprocess
import threading
import time

from harness.cli import main
from harness.progress import TableProgress
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


def test_table_progress_shows_runs_epoch_step_speed_and_eta(tmp_path):
    stream, lines = io.StringIO(), []
    with TableProgress(3, lines.append, stream=stream) as progress:
        progress.start(tmp_path, "abc123 (base)")
        beat = {"time": time.time(), "epoch": 2, "epochs": 4, "step": 5, "steps": 10, "images_per_s": 321.0}
        (tmp_path / "heartbeat").write_text(json.dumps(beat))
        time.sleep(1.2)  # the polling thread reads it
        progress.write("abc123 (base) done: top-1 50.00")
        progress.finish()
    out = stream.getvalue()
    assert "abc123 (base) epoch 2/4 step 5/10, 321 img/s, run ETA" in out and "table ETA" in out
    assert "1/3" in out and "done: top-1 50.00" in out


def test_eta_counts_the_runs_still_to_come():
    progress = TableProgress(4, print, enabled=False)
    progress.run_started = time.monotonic() - 10  # 10 s into a run that is a quarter done
    described = progress.describe({"epoch": 1, "epochs": 2, "step": 5, "steps": 10, "images_per_s": 1})
    assert "run ETA 0:00:30" in described and "table ETA 0:02:30" in described  # + 3 runs of 40 s


def test_status_watch_refreshes_until_no_run_is_live(tmp_path, capsys):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, runs = load_recipe(recipe, TINY_OVERRIDES)
    sleeper = subprocess.Popen(["sleep", "2"])
    record = {"launcher": "local", "job_id": str(sleeper.pid), "host": socket.gethostname()}
    runs[0].folder.mkdir(parents=True)
    (runs[0].folder / "submitted.json").write_text(json.dumps(record))
    reaper = threading.Thread(target=sleeper.wait)  # a zombie would look alive to the status
    reaper.start()
    start = time.monotonic()
    assert main(["status", str(recipe), *TINY_OVERRIDES, "--watch", "--every", "0.3"]) == 0
    reaper.join()
    out = capsys.readouterr().out
    assert out.count("run(s) live; refreshing") >= 3 and time.monotonic() - start >= 1.5
    last = out.split("Tiny: a test table")[-1]  # the final refresh: the job has ended
    assert "failed: the local job ended without a result" in last and "refreshing" not in last
