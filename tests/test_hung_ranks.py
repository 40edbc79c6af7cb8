"""No hung jobs: a rank whose peer is silent fails within train.collective_timeout_s; a rank killed with
SIGKILL (which writes nothing) is named by its peer in `status`; the job ends, and a rerun resumes to the
metrics of a run nobody killed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.peers import Peer, failure_name, vanished
from harness.lifecycle import read_submission, run_states
from harness.recipe import load_recipe
from harness.results import read_metrics, run_dir
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny
from tests.test_harness_train import REPO, _harness, _run_to_end, _same_training

SILENT_PEER = """
import os, signal, sys
from harness import distributed
world = distributed.setup(timeout_s=2.0)
if world.rank == 1:
    os.kill(os.getpid(), signal.SIGSTOP)  # alive, but never answers again
distributed.all_sum([1.0], world)  # rank 0 waits here for the stopped rank 1
"""


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_vanished_names_the_dead_peers_of_this_host_without_a_failure_file(tmp_path):
    dead, failed, alive = _sleeper(), _sleeper(), _sleeper()
    try:
        for proc in (dead, failed):
            proc.kill()
            proc.wait()
        (tmp_path / failure_name(2)).write_text("{}")  # rank 2 said why it stopped
        me = Peer(0, "here", os.getpid())
        peers = [
            me,
            Peer(1, "here", dead.pid),
            Peer(2, "here", failed.pid),
            Peer(3, "here", alive.pid),
            Peer(4, "elsewhere", dead.pid),  # another host's process cannot be asked about
        ]
        assert vanished(peers, me, tmp_path, grace_s=0.5) == [Peer(1, "here", dead.pid)]
        assert vanished([me, Peer(3, "here", alive.pid)], me, tmp_path, grace_s=0.5) == []
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.slow
def test_a_silent_peer_fails_the_collective_within_the_timeout():
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(20000 + os.getpid() % 20000)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SILENT_PEER],
            env={**env, "RANK": str(rank)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    try:
        _, err = procs[0].communicate(timeout=120)  # torch's default for gloo: 30 min
        assert procs[0].returncode != 0 and "Timed out" in err, err
    finally:
        procs[1].kill()
        procs[1].wait()


OVERRIDES = [*TINY_OVERRIDES, "epochs=4", "data.synthetic.train_per_class=64", "seeds=[3]"]
ROW = ["--rows", "base"]  # one run: the command ends with it
TWO = ["launcher=local", "resources.tasks_per_node=2", "train.collective_timeout_s=30"]


def _recipe(folder: Path) -> tuple[Path, Path]:
    folder.mkdir()
    recipe = write_tiny(folder, folder / "runs")
    (run,) = [run for run in load_recipe(recipe, [*OVERRIDES, *TWO])[1] if run.config.row == "base"]
    return recipe, run_dir(run.config, run.uid)


def _rank_pid(controller: int, rank: int) -> int:
    """The pid of a local job's task of `rank` (submitit's local controller starts one per rank)."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == controller and f"SUBMITIT_LOCAL_GLOBALID={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no task of rank {rank} under the local job {controller}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    recipe, folder = _recipe(tmp_path_factory.mktemp("reference") / "r")
    _run_to_end("run", str(recipe), *ROW, *OVERRIDES, *TWO, f"launcher.folder={folder.parent / 'submitit'}")
    return read_metrics(folder)


@pytest.mark.slow
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_rank_ends_the_job_is_named_and_the_rerun_resumes(tmp_path, killed, uninterrupted):
    recipe, folder = _recipe(tmp_path / "run")
    args = ["run", str(recipe), *ROW, *OVERRIDES, *TWO, f"launcher.folder={tmp_path / 'submitit'}"]
    proc = _harness(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while len(read_metrics(folder)) < 1 and time.time() < deadline:  # kill it inside its second epoch
        time.sleep(0.05)
    submission = read_submission(folder)
    assert submission is not None, proc.communicate()[0]
    os.kill(_rank_pid(int(submission["job_id"]), killed), signal.SIGKILL)
    killed_at = time.time()
    # the job ends at once; submitit then waits 15 s for the result file that a killed rank 0 never writes
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    state = run_states([folder])[0]
    assert state.state == "failed" and f"rank {killed}" in state.detail and "vanished" in state.detail
    survivor = json.loads((folder / failure_name(1 - killed)).read_text())
    assert f"rank(s) {killed} vanished" in survivor["reason"]
    assert survivor["time"] - killed_at < 10  # its collective failed at once, long before the timeout
    assert 1 <= len(read_metrics(folder)) < 4
    _run_to_end(*args)
    got = read_metrics(folder)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4]
    _same_training(got, uninterrupted)
