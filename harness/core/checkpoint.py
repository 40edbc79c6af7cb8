"""Checkpoints: written atomically, read with `weights_only=True`, and never loaded into a model they do
not fit: a missing, unexpected or differently shaped key is refused by name (no silent `strict=False`). A
file that cannot be read as a checkpoint is refused naming the file and why, in one line."""

import pickle
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from harness.results import checkpoint_path
from harness.text import one_line

SHOWN = 8  # keys named per kind of mismatch; the count says how many more


class CheckpointUnreadable(RuntimeError):
    """A file that is not a checkpoint this harness wrote: broken, truncated, or holding objects other than
    tensors and plain data (which `weights_only=True` refuses to build)."""


class CheckpointMismatch(RuntimeError):
    """A checkpoint's weights do not fit the model a run builds; the message names the keys."""


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write a sibling temporary file, then rename: a crash leaves the previous checkpoint whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load(path: Path, what: str) -> dict[str, Any]:
    """A checkpoint on the CPU; `what` says whose, for the error when it is gone."""
    if not path.is_file():
        raise FileNotFoundError(f"{what}: checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises whatever a broken or hostile file makes it meet
        raise CheckpointUnreadable(f"{what}: checkpoint {path} cannot be read: {_why(error)}") from error
    if not isinstance(payload, dict):
        raise CheckpointUnreadable(
            f"{what}: checkpoint {path} holds a {type(payload).__name__}, expected a mapping"
        )
    return payload


def load_model(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The `model` weights of a checkpoint: a mapping of parameter names to tensors, or refused."""
    state = load(path, what).get("model")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointUnreadable(f"{what}: checkpoint {path} has no 'model' mapping names to tensors")
    return state


def _why(error: Exception) -> str:
    """torch's reason in a line: for a refused object the line that names it, not torch's advice."""
    if isinstance(error, pickle.UnpicklingError):
        refused = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if refused:
            return f"it holds an object that weights_only=True refuses to build ({one_line(refused[0])})"
    return f"{type(error).__name__}: {one_line(str(error)) or 'no message'}"


def _listed(keys: list[str]) -> str:
    more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(keys[:SHOWN]) + more


def classifier_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the model's classification head (timm's `pretrained_cfg['classifier']`)."""
    prefixes = model.pretrained_cfg.get("classifier", "head")
    prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
    return {k for k in model.state_dict() if any(k == p or k.startswith(p + ".") for p in prefixes)}


def upstream_weights(upstream: DictConfig) -> tuple[dict[str, torch.Tensor], str]:
    """The `model` weights of a run's upstream checkpoint (`from: {checkpoint: final | best}`), and the
    upstream run and file in words; a missing or unreadable file is refused naming both."""
    source = checkpoint_path(Path(upstream.folder), upstream.checkpoint)
    what = f"upstream run {upstream.uid} (row '{upstream.row}' of {upstream.recipe})"
    return load_model(source, what), f"{what}: {source}"


def load_upstream(model: nn.Module, upstream: DictConfig, skip: Collection[str] = frozenset()) -> None:
    """The run's upstream weights loaded into `model` by `load_weights`' rules: keys that do not fit are
    refused naming the upstream run, the file and the keys."""
    load_weights(model, *upstream_weights(upstream), skip)


def load_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, skip: Collection[str] = frozenset()
) -> None:
    """Load `state` into `model`, every key and shape matching except the keys in `skip` (left as the model
    initialised them, e.g. a new head); otherwise raise CheckpointMismatch naming the keys."""
    expected = {k: v for k, v in model.state_dict().items() if k not in skip}
    given = {k: v for k, v in state.items() if k not in skip}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    shapes = sorted(
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(given) & set(expected)
        if given[k].shape != expected[k].shape
    )
    problems = [
        f"{len(items)} {kind}: {_listed(items)}"
        for kind, items in (
            ("missing from the checkpoint", missing),
            ("in the checkpoint but not in the model", unexpected),
            ("with other shapes (checkpoint vs model)", shapes),
        )
        if items
    ]
    if problems:
        raise CheckpointMismatch(
            f"{source} does not fit {type(model).__name__}: "
            + "; ".join(problems)
            + " (e.g. a SAR last block has no norm2 weights: a run keeps its upstream's last_block)"
        )
    model.load_state_dict(given, strict=not skip)  # every key but the skipped ones was checked above
