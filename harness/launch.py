"""Launch resolved runs with submitit: Slurm job arrays (DDP, requeue on preemption), local subprocesses,
or inline in this process (debugging, tests)."""

import shutil
from collections.abc import Callable
from pathlib import Path

import submitit
import torch
from omegaconf import OmegaConf

from harness.recipe import ResolvedRun
from harness.train import train_run


class TrainJob(submitit.helpers.Checkpointable):
    """A run as a submitit job. On preemption or time-out submitit calls `checkpoint`, which (inherited)
    resubmits the same call; `train_run` then resumes from the run's last epoch checkpoint."""

    def __call__(self, config: dict, uid: str) -> dict:
        return train_run(config, uid)


def launcher_name(run: ResolvedRun) -> str:
    name = run.config.launcher.name
    if name == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return name


def _tasks(run: ResolvedRun, gpus: int) -> int:
    return run.config.resources.tasks_per_node or max(1, gpus)


def _executor(kind: str, run: ResolvedRun) -> submitit.Executor:
    r, launcher = run.config.resources, run.config.launcher
    folder = Path(launcher.folder) / "%j"
    if kind == "local":  # the GPUs this machine has, at most the ones asked for; one task per GPU
        gpus = min(r.gpus_per_node, torch.cuda.device_count())
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(
            timeout_min=r.timeout_min, gpus_per_node=gpus, tasks_per_node=_tasks(run, gpus)
        )
        return executor
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    extra = {key: launcher[key] for key in ("account", "qos") if launcher[key]}
    executor.update_parameters(
        name=f"sar-{run.table}",
        timeout_min=r.timeout_min,
        nodes=r.nodes,
        gpus_per_node=r.gpus_per_node,
        tasks_per_node=_tasks(run, r.gpus_per_node),
        cpus_per_task=r.cpus_per_task,
        mem_gb=r.mem_gb,
        slurm_partition=launcher.partition,
        slurm_array_parallelism=launcher.array_parallelism,
        slurm_additional_parameters=extra,
    )
    return executor


def _as_dict(run: ResolvedRun) -> dict:
    return OmegaConf.to_container(run.config, resolve=True)


def _train_here(run: ResolvedRun, job: submitit.Job | None, log: Callable[[str], None]) -> bool:
    """Wait for one run trained on this machine (inline when `job` is None); False if it failed."""
    try:
        result = job.results()[0] if job is not None else TrainJob()(_as_dict(run), run.uid)
    except KeyboardInterrupt:
        if job is not None:  # a local job would otherwise train on, detached from this command
            job.cancel()
        raise
    except Exception as error:  # the run's own failure.json holds the details
        log(f"{run.uid} ({','.join(run.rows)}) failed: {str(error).strip().splitlines()[-1]}")
        return False
    log(f"{run.uid} ({','.join(run.rows)}) done: top-1 {result['final_top1']:.2f}")
    return True


def launch(runs: list[ResolvedRun], log: Callable[[str], None] = print) -> int:
    """Start `runs` and return how many failed. Inline and local runs go one at a time, since they share
    this machine, and are waited for; Slurm runs go as one job array per resource shape and are not."""
    failed = 0
    for run in runs:
        kind = launcher_name(run)
        if kind == "inline":
            failed += not _train_here(run, None, log)
        elif kind == "local":
            job = _executor("local", run).submit(TrainJob(), _as_dict(run), run.uid)
            log(f"{run.uid} ({','.join(run.rows)}) running locally as job {job.job_id}")
            failed += not _train_here(run, job, log)
    groups: dict[tuple, list[ResolvedRun]] = {}
    for run in (r for r in runs if launcher_name(r) == "slurm"):
        shape = (*OmegaConf.to_container(run.config.resources).items(), run.table)
        groups.setdefault(shape, []).append(run)
    for group in groups.values():
        jobs = _executor("slurm", group[0]).map_array(
            TrainJob(), [_as_dict(r) for r in group], [r.uid for r in group]
        )
        for run, job in zip(group, jobs, strict=True):
            log(f"{run.uid} ({','.join(run.rows)}) submitted to Slurm as job {job.job_id}")
    return failed
