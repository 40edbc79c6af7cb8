"""Configuration: the schemas (with identity declared on their fields), Hydra composition of recipes and
protocols, and Hydra's override grammar applied to runs. Imports nothing heavy (no torch, no timm)."""

import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parents[2]
RECIPES_DIR = PROJECT_DIR / "recipes"
PROTOCOL_DIR_NAME = "protocol"  # recipes/protocol/: the protocol config group, not recipes
RUNS_ENV = "SAR_RUNS"


class RecipeError(ValueError):
    """A recipe or an override is invalid; the message names the file or override, the key and what was
    expected. Raised before anything is launched or written."""


def runs_root(value: str | None) -> str:
    """The run store as an absolute path, so that it does not depend on the folder a command runs from:
    `value` (relative to the current folder), else $SAR_RUNS, else `runs/` in the project."""
    chosen = value or os.environ.get(RUNS_ENV) or str(PROJECT_DIR / "runs")
    return str(Path(chosen).expanduser().resolve())


def recipe_paths(folder: Path = RECIPES_DIR) -> list[Path]:
    """Every recipe under `folder`, its subfolders' too (`recipes/beyond/`), but the protocol files."""
    return sorted(p for p in folder.rglob("*.yaml") if PROTOCOL_DIR_NAME not in p.relative_to(folder).parts)


def list_recipes(folder: Path = RECIPES_DIR) -> list[tuple[Path, str, str]]:
    """(path, title, what it reproduces) for every recipe in `folder`: read as plain YAML, nothing composed,
    so that `python -m harness list` imports neither Hydra nor torch."""
    found = []
    for path in recipe_paths(folder):
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise RecipeError(f"{path}: not valid YAML: {error}") from error
        found.append((path, str(raw.get("title", "")), str(raw.get("reproduces", ""))))
    return found


def hashable(value: Any) -> Any:
    """Nested dicts and lists as sorted tuples: a cache key, and a comparison that does not tell a tuple
    from the list it reads back as."""
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return tuple(hashable(v) for v in value) if isinstance(value, list | tuple) else value
