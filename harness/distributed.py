"""One training process among many (DDP) or alone: initialised from submitit's job environment, from
torchrun's variables, or not at all."""

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1
    job_id: str = "inline"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


# torch's env:// rendezvous, as submitit's TorchDistributedEnvironment exports it
RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def _submitit_world() -> World | None:
    """The job's ranks, and (with several tasks) its rendezvous exported for `init_process_group`: the
    master is the first node of the job's node list (where task 0 runs), the port is drawn from the job id
    (the same on every rank, another one for each task of a job array), ranks are Slurm's task ids.

    Values of RENDEZVOUS already in the environment are dropped first: they are the submitting shell's
    (sbatch and the local executor pass its environment on; a torchrun's or an allocation's), submitit
    refuses to export over them, and it would take an inherited MASTER_PORT as the port of every job
    started from that shell."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except (ImportError, RuntimeError):
        return None
    if env.num_tasks > 1:
        for name in RENDEZVOUS:
            os.environ.pop(name, None)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return World(env.global_rank, env.local_rank, env.num_tasks, str(env.job_id))


def setup(timeout_s: float) -> World:
    """Join the process group when there are several tasks (gloo on CPU, NCCL on GPU).

    `timeout_s` (train.collective_timeout_s) bounds every collective: a rank whose peer is gone or silent
    fails instead of waiting forever. A peer killed on this host closes its connections, and gloo fails
    the collective at once; the timeout covers what closes nothing (a stopped or hung peer, a lost node).
    It is the bound rather than a heartbeat watchdog because only it can end a wait inside the backend;
    `harness.core.peers` then names the rank that vanished. Under NCCL, torch's watchdog ends the
    process at the timeout (TORCH_NCCL_ASYNC_ERROR_HANDLING), before any failure file is written."""
    world = _submitit_world()
    if world is None:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        world = World(
            rank, int(os.environ.get("LOCAL_RANK", "0")), size, os.environ.get("SLURM_JOB_ID", "inline")
        )
    if world.size > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo",
            rank=world.rank,
            world_size=world.size,
            timeout=timedelta(seconds=timeout_s),
        )
    return world


def all_sum(values: list[float], world: World) -> list[float]:
    if world.size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=world.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather(values: list[float], world: World) -> list[float]:
    """Every rank's `values`, concatenated in rank order: for a sum that must not depend on how the values
    were split among the ranks (`math.fsum` of them is exact in any order)."""
    if world.size == 1:
        return values
    parts: list[list[float] | None] = [None] * world.size
    dist.all_gather_object(parts, values)
    return [value for part in parts for value in part or []]


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
