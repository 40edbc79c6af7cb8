"""Processes of this host: whether one lives, and stopping a local job with everything it started, whatever
signals it ignores (a job started from a script's `&` ignores SIGINT, submitit's tasks bypass SIGTERM)."""

import os
import signal
import time
from pathlib import Path

from harness.records import PID_MAX

GRACE_S = 10.0  # after SIGINT, how long a job has to stop its tasks and end before SIGKILL
KILLED_S = 10.0  # after SIGKILL, how long the kernel may take to end the processes
POLL_S = 0.1


class JobNotStopped(RuntimeError):
    """A local job's processes outlived SIGKILL (a process stuck in the kernel): named by pid."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None if there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def process_alive(pid: int) -> bool:
    """A process of this host that exists and is not a zombie (an orphan nobody reaped ran to its end)."""
    if not 0 < pid <= PID_MAX:  # 0 and -1 would ask about a process group and every process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return fields is None or fields[0] != "Z"


def _processes() -> tuple[dict[int, list[int]], dict[int, str]]:
    """Every process's children, and its start time (so that a pid reused by another process after they
    ended is never signalled)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _stat(int(entry.name)) if entry.name.isdigit() else None
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
            started[int(entry.name)] = fields[19]
    return children, started


def _tree(pid: int) -> tuple[dict[int, str], list[int]]:
    """`pid` and every process under it, each with its start time; and its own children."""
    children, started = _processes()
    found, todo = {}, [pid]
    while todo:
        current = todo.pop()
        if current in started and current not in found:
            found[current] = started[current]
            todo += children.get(current, [])
    return found, [child for child in children.get(pid, []) if child in found]


def _start(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields is not None else None


def _alive(tree: dict[int, str]) -> dict[int, str]:
    """The processes of `tree` still running as the same processes."""
    return {pid: start for pid, start in tree.items() if process_alive(pid) and _start(pid) == start}


def _wait(tree: dict[int, str], seconds: float) -> dict[int, str]:
    """Wait up to `seconds` for the processes of `tree` to end; those still alive."""
    deadline = time.monotonic() + seconds
    while (alive := _alive(tree)) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return alive


def _signal(job: int, pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass  # it ended meanwhile
    except PermissionError as error:
        raise JobNotStopped(f"local job {job}: process {pid} is not this user's to stop") from error


def stop_local_job(pid: int) -> None:
    """Stop the local job whose controller is `pid`, and every process under it. SIGINT goes to its tasks
    (a trainer releases its lock and ends; the controller, seeing its tasks end, ends without a word), or to
    `pid` itself if it has none; whatever still runs GRACE_S later (it ignored SIGINT) gets SIGKILL. Raises
    JobNotStopped if a process is still there after that."""
    tree, tasks = _tree(pid)
    for process in tasks or ([pid] if pid in tree else []):
        _signal(pid, process, signal.SIGINT)
    left = _wait(tree, GRACE_S)
    if pid in left:
        left |= _tree(pid)[0]  # with the tasks it started meanwhile
    for process in left:
        _signal(pid, process, signal.SIGKILL)
    if stuck := _wait(left, KILLED_S):
        raise JobNotStopped(f"local job {pid}: process(es) {', '.join(map(str, stuck))} outlived SIGKILL")
