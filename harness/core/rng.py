"""Seeding and saving the global generators, so that a resumed run continues bit-for-bit."""

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Every global generator a training step draws from, as tensors and lists (`weights_only` loads it):
    numpy's is timm's Mixup's."""
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, cached]},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["gauss"][0], np_state["gauss"][1]))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (timm's Mixup uses the global generator)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(*key: int) -> Iterator[None]:
    """Python's, numpy's and torch's global generators seeded from `key`, restored afterwards."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()  # noqa: NPY002
    words = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(6)  # distinct seed per generator
    random.seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words[2:4])  # noqa: NPY002
    torch.default_generator.manual_seed(int(words[4]) << 32 | int(words[5]))  # CPU only: cheaper
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])  # noqa: NPY002
        torch.set_rng_state(saved[2])


def gathered_rng_state(world_size: int) -> list[dict[str, Any]]:
    """Every rank's `rng_state()`, in rank order (each rank resumes its own); a collective call."""
    if world_size == 1:
        return [rng_state()]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, rng_state())
    return gathered


def resume_rng_state(states: list[dict[str, Any]], rank: int) -> None:
    """Continue this rank's random streams from a checkpoint's `gathered_rng_state`; a rank the saved run
    did not have (more processes now) takes rank 0's."""
    set_rng_state(states[rank] if rank < len(states) else states[0])
