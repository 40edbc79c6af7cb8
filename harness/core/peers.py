"""Which rank vanished. A rank killed by SIGKILL (or the out-of-memory killer) writes no failure file, and
its peers only learn that a collective failed ("Connection reset by peer", or a timeout): each rank
therefore learns every peer's host and pid when the job starts, and a rank that fails looks for the peers
on its host whose process ended without a failure file of their own, so that `status` names them."""

import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch.distributed as dist

from harness.distributed import World
from harness.processes import process_alive

GRACE_S = 5.0  # a peer's connections close as it exits, a little before its process is gone
POLL_S = 0.1


@dataclass(frozen=True)
class Peer:
    rank: int
    host: str
    pid: int


def failure_name(rank: int) -> str:
    """The failure file of a rank: rank 0's is the run's failure.json."""
    return "failure.json" if rank == 0 else f"failure-rank{rank}.json"


def gather(world: World, pid: int) -> list[Peer]:
    """Every rank's host and pid (a collective: every rank calls it once the process group is up)."""
    me = Peer(world.rank, socket.gethostname(), pid)
    if world.size == 1:
        return [me]
    peers: list[Peer | None] = [None] * world.size
    dist.all_gather_object(peers, me)
    return [peer for peer in peers if peer is not None]


def vanished(peers: list[Peer], me: Peer, folder: Path, grace_s: float = GRACE_S) -> list[Peer]:
    """The peers on this host whose process ended without a failure file, waiting up to `grace_s` for
    one to be gone. A peer on another host cannot be asked about its process and is not named here."""
    here = [p for p in peers if p.rank != me.rank and p.host == me.host]
    deadline = time.monotonic() + grace_s
    while True:
        gone = [p for p in here if not process_alive(p.pid) and not (folder / failure_name(p.rank)).exists()]
        if gone or not here or time.monotonic() >= deadline:
            return gone
        time.sleep(POLL_S)


def vanished_reason(peer: Peer) -> str:
    """What a peer writes on behalf of a vanished rank (`status` shows the first failure: this one)."""
    return (
        f"vanished: the process of rank {peer.rank} (pid {peer.pid} on {peer.host}) ended without a "
        "failure of its own (killed, e.g. by SIGKILL or the out-of-memory killer, or crashed)"
    )
