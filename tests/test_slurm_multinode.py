"""A supervised run on two Slurm nodes (one task each), requeued mid-run, ends with the metrics of an
uninterrupted run. The nodes are node1 and node2 of the partition `multi`, which `bash
tests/slurm/cluster.sh up2` makes on this one machine: each a slurmd in its own network, mount and hostname
namespaces, so that the two ranks meet through the rendezvous of a real multi-node job (the master is the
first node of the job's node list, reached at its own address). Without that partition these tests skip,
or fail if REQUIRE_SLURM=1."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness_fixtures import TINY_OVERRIDES, require_cluster, write_tiny

pytestmark = [pytest.mark.slurm, pytest.mark.slow]  # real jobs: minutes, not seconds

REPO = Path(__file__).resolve().parents[1]
UP2 = "bash tests/slurm/cluster.sh up2"
PARTITION = "multi"
NODES = ["node1", "node2"]


def _partition_problem() -> str | None:
    """Why there are no two usable nodes in the partition `multi`, or None if there are."""
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        return f"no Slurm here (sinfo/sacct not on the PATH); bring a 2-node test cluster up with `{UP2}`"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %t"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return f"`sinfo` did not answer in 30 s; bring the 2-node test cluster up with `{UP2}`"
    states = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    up = [n for n in NODES if states.get(n, "").rstrip("*~#$@^-+").startswith(("idle", "mix", "alloc"))]
    if proc.returncode != 0 or up != NODES:
        found = states or proc.stderr.strip() or "none"
        return f"nodes {' and '.join(NODES)} are not up in partition {PARTITION} ({found}): run `{UP2}`"
    return None


@pytest.fixture(scope="module", autouse=True)
def two_nodes():
    require_cluster(_partition_problem())


TWO_NODES = [
    "launcher=slurm",
    f"launcher.partition={PARTITION}",
    "resources.nodes=2",
    "resources.tasks_per_node=1",
    "resources.cpus_per_task=1",
    "resources.mem_gb=2",
    "resources.timeout_min=10",
]
# as a shell inside a torchrun or an allocation would have them: sbatch passes them on to the job, which
# must take its own rendezvous instead (harness.distributed)
SUBMITTING_SHELL = {"MASTER_ADDR": "login9", "MASTER_PORT": "29500", "RANK": "3", "WORLD_SIZE": "8"}


def _harness(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _sacct(job: str, fields: str, duplicates: bool = False) -> list[list[str]]:
    """One row per job record (with `duplicates`, the records of its earlier starts too)."""
    command = ["sacct", "-n", "-X", "-P", "-j", job, "-o", fields, *(["-D"] if duplicates else [])]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    return [line.split("|") for line in proc.stdout.strip().splitlines()]


def test_two_node_run_requeued_mid_run_resumes_to_the_uninterrupted_metrics(tmp_path):
    from harness.lifecycle import read_submission
    from harness.provenance import LOG
    from harness.recipe import load_recipe
    from harness.results import read_metrics, read_result
    from tests.test_harness_train import _same_training
    from tests.test_slurm import _wait_until

    recipe = write_tiny(tmp_path, tmp_path / "slurm-runs")
    overrides = ["--rows", "base", *TINY_OVERRIDES, "epochs=6", "seeds=[0]"]
    (run, _) = load_recipe(recipe, overrides[2:])[1]
    proc = _harness("run", str(recipe), *overrides, *TWO_NODES, env=SUBMITTING_SHELL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = read_submission(run.folder)["job_id"]
    _wait_until(lambda: len(read_metrics(run.folder)) >= 2, 180, "2 epochs in")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # as a preemption would
    _wait_until(lambda: (run.folder / "result.json").exists(), 240, "done after the requeue")

    def states() -> list[str]:
        return [row[0] for row in _sacct(job, "State", duplicates=True)]

    # slurmdbd records the requeue a little after the job moves on: wait for the accounting, then check
    _wait_until(lambda: "REQUEUED" in states() and "COMPLETED" in states(), 60, "the requeue in sacct")
    assert all(nodes == "node[1-2]" for (nodes,) in _sacct(job, "NodeList", duplicates=True))
    result = read_result(run.folder)[0]
    assert result.provenance["world_size"] == 2
    assert result.provenance["host"] == "node1"  # rank 0 writes the result: on the job's first node
    starts = [json.loads(line) for line in (run.folder / LOG).read_text().splitlines()]
    assert [(s["event"], s["job_id"], s["host"]) for s in starts] == [
        ("start", job, "node1"),
        ("resume", job, "node1"),
    ]
    assert starts[1]["epoch"] >= 2
    logs = sorted(Path(read_submission(run.folder)["stdout"]).parent.glob(f"{job}_*_log.out"))
    ranks = [
        (line.split("hostname=")[1].split(",")[0], line.split("global_rank=")[1].split("(")[0])
        for path in logs
        for line in path.read_text().splitlines()
        if "Starting with JobEnvironment" in line
    ]
    assert sorted(ranks) == [("node1", "0"), ("node1", "0"), ("node2", "1"), ("node2", "1")], ranks

    reference = tmp_path / "local-runs"
    local = [
        *overrides,
        "launcher=local",
        "resources.tasks_per_node=2",
        f"runs_root={reference}",
        f"launcher.folder={tmp_path / 'local'}",
    ]
    proc = _harness("run", str(recipe), *local)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (straight, _) = load_recipe(recipe, local[2:])[1]
    assert straight.uid == run.uid and read_result(straight.folder)[0].provenance["world_size"] == 2
    resumed = read_metrics(run.folder)
    assert [m["epoch"] for m in resumed] == [1, 2, 3, 4, 5, 6]
    _same_training(resumed, read_metrics(straight.folder))
