"""The rendezvous of a multi-node Slurm job as the harness makes it (`harness.distributed.setup`, through
submitit's JobEnvironment and TorchDistributedEnvironment), from the variables Slurm sets in each task of
the job: master address, port, ranks. No cluster is needed: each task's environment is written here as
srun sets it (block distribution: the first node runs the first ranks)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from harness import distributed

REPO = Path(__file__).resolve().parents[1]


def slurm_task(
    job_id: str, nodelist: str, nodes: list[str], rank: int, tasks_per_node: int = 1, **extra: str
) -> dict[str, str]:
    """What srun sets (among others) in the task of global rank `rank` of a submitit job with
    `tasks_per_node` tasks on each of `nodes` (`nodelist`: how Slurm writes them)."""
    node = rank // tasks_per_node
    ntasks = len(nodes) * tasks_per_node
    return {
        "SUBMITIT_EXECUTOR": "slurm",  # set by submitit's sbatch script
        "SLURM_JOB_ID": job_id,
        "SLURM_JOBID": job_id,
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_NODELIST": nodelist,
        "SLURM_STEP_NODELIST": nodelist,
        "SLURM_JOB_NUM_NODES": str(len(nodes)),
        "SLURM_NNODES": str(len(nodes)),
        "SLURM_STEP_NUM_NODES": str(len(nodes)),
        "SLURM_NTASKS": str(ntasks),
        "SLURM_NPROCS": str(ntasks),
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
        "SLURM_NODEID": str(node),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank % tasks_per_node),
        "SLURMD_NODENAME": nodes[node],
        **extra,
    }


def _joined(monkeypatch, task: dict[str, str]) -> tuple[distributed.World, dict[str, str], dict]:
    """What `setup` comes to in the task whose Slurm variables are `task`: the World, the rendezvous
    variables it exported, and the arguments it gave `init_process_group` (which is not called)."""
    for name in list(os.environ):
        if name.startswith(("SLURM", "SUBMITIT_")):
            monkeypatch.delenv(name)
    for name in distributed.RENDEZVOUS:
        # set, then deleted: monkeypatch records only a variable it changes, and so undoes what `setup`
        # exports after the test (a RANK/WORLD_SIZE left behind made later inline runs wait for a peer)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in task.items():
        monkeypatch.setenv(name, value)
    called: dict = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        dist, "init_process_group", lambda backend, **kw: called.update(backend=backend, **kw)
    )
    world = distributed.setup(timeout_s=30)
    exported = {name: os.environ[name] for name in distributed.RENDEZVOUS if name in os.environ}
    return world, exported, called


@pytest.mark.parametrize(
    "nodelist,nodes",
    [
        ("node[1-2]", ["node1", "node2"]),
        ("b,a", ["b", "a"]),  # Slurm's order (the nodes' order in slurm.conf), not sorted
        ("cn[099-100]", ["cn099", "cn100"]),
        ("gpu[3,7]", ["gpu3", "gpu7"]),
        ("rack1-n[2-3]-ib", ["rack1-n2-ib", "rack1-n3-ib"]),
    ],
)
def test_two_nodes_one_task_each(monkeypatch, nodelist, nodes):
    seen = []
    for rank in (0, 1):
        world, exported, called = _joined(monkeypatch, slurm_task("4242", nodelist, nodes, rank))
        assert world == distributed.World(rank=rank, local_rank=0, size=2, job_id="4242")
        assert exported["MASTER_ADDR"] == nodes[0]  # the node of rank 0
        assert (exported["RANK"], exported["WORLD_SIZE"]) == (str(rank), "2")
        assert (exported["LOCAL_RANK"], exported["LOCAL_WORLD_SIZE"]) == ("0", "1")
        assert called["backend"] == "gloo" and (called["rank"], called["world_size"]) == (rank, 2)
        assert called["timeout"].total_seconds() == 30
        seen.append(exported)
    assert seen[0]["MASTER_ADDR"] == seen[1]["MASTER_ADDR"]
    assert seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]
    assert 20000 <= int(seen[0]["MASTER_PORT"]) <= 60000


def test_two_nodes_two_tasks_each(monkeypatch):
    nodes = ["node1", "node2"]
    for rank, node, local in ((0, 0, 0), (1, 0, 1), (2, 1, 0), (3, 1, 1)):
        task = slurm_task("4242", "node[1-2]", nodes, rank, tasks_per_node=2)
        assert task["SLURM_NODEID"] == str(node)
        world, exported, _ = _joined(monkeypatch, task)
        assert (world.rank, world.local_rank, world.size) == (rank, local, 4)
        assert exported["MASTER_ADDR"] == "node1"
        assert (exported["LOCAL_RANK"], exported["LOCAL_WORLD_SIZE"]) == (str(local), "2")


def _port(monkeypatch, job_id: str, rank: int = 0, **extra: str) -> int:
    task = slurm_task(job_id, "node[1-2]", ["node1", "node2"], rank, **extra)
    return int(_joined(monkeypatch, task)[1]["MASTER_PORT"])


def test_the_port_is_drawn_from_the_job_id(monkeypatch):
    assert _port(monkeypatch, "186") == _port(monkeypatch, "186", rank=1)  # also after a requeue: same id
    assert _port(monkeypatch, "186") != _port(monkeypatch, "187")
    # the tasks of a job array (each its own job id too) are told apart by their array ids
    first = _port(monkeypatch, "189", SLURM_ARRAY_JOB_ID="186", SLURM_ARRAY_TASK_ID="3")
    assert first == _port(monkeypatch, "189", rank=1, SLURM_ARRAY_JOB_ID="186", SLURM_ARRAY_TASK_ID="3")
    assert first != _port(monkeypatch, "190", SLURM_ARRAY_JOB_ID="186", SLURM_ARRAY_TASK_ID="4")


def test_the_submitting_shells_rendezvous_is_not_the_jobs(monkeypatch):
    """sbatch passes the submitting shell's environment on: a torchrun's or an allocation's MASTER_* there
    must neither stop the job (submitit refuses to export over them) nor give it their address or port."""
    task = slurm_task("186", "node[1-2]", ["node1", "node2"], 1)
    stale = {
        "MASTER_ADDR": "login3",
        "MASTER_PORT": "29500",
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "5",
    }
    world, exported, called = _joined(monkeypatch, {**task, **stale})
    assert (world.rank, world.size) == (1, 2) and (called["rank"], called["world_size"]) == (1, 2)
    assert exported["MASTER_ADDR"] == "node1" and exported["MASTER_PORT"] == str(_port(monkeypatch, "186"))
    assert (exported["RANK"], exported["WORLD_SIZE"], exported["LOCAL_RANK"]) == ("1", "2", "0")


def test_one_task_exports_no_rendezvous(monkeypatch):
    task = {**slurm_task("186", "node1", ["node1"], 0), "SLURM_NTASKS": "1"}
    world, exported, called = _joined(monkeypatch, task)
    assert world == distributed.World(0, 0, 1, "186") and not exported and not called


JOIN = """
import json, os
from harness import distributed
world = distributed.setup(timeout_s=60)
total = distributed.all_sum([float(world.rank + 1)], world)
print(json.dumps({"rank": world.rank, "size": world.size, "total": total[0],
                  "master": [os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]]}))
distributed.teardown()
"""


def test_two_processes_with_a_two_node_jobs_variables_join_one_group(tmp_path):
    """Each process has only its own task's variables (and its own hash seed): they meet at the port both
    derive from the job id, on the first node (here both names resolve to this machine)."""
    job = str(100000 + os.getpid() % 800000)  # a port of its own for each test process
    procs = []
    for rank in (0, 1):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM", "SUBMITIT_"))}
        env |= slurm_task(job, "localhost,127.0.0.1", ["localhost", "127.0.0.1"], rank)
        env |= {"MASTER_PORT": "1", "PYTHONHASHSEED": str(rank + 1), "OMP_NUM_THREADS": "1"}
        env |= {"PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", JOIN],
                env=env,
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-3000:]
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    assert [o["rank"] for o in outs] == [0, 1] and all(o["size"] == 2 for o in outs)
    assert all(o["total"] == 3.0 for o in outs)
    assert outs[0]["master"] == outs[1]["master"] and outs[0]["master"][0] == "localhost"
