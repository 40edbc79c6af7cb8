"""Load a recipe, validate it, and expand it into fully resolved runs, each with a stable uid.

Nothing here launches or writes anything: every error is raised before a run folder exists, and names the
file, the key and what was expected.
"""

import functools
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import sar  # registers the SAR-ready models with timm
from harness.schema import Protocol, Recipe, Run
from sar.models import LAST_BLOCKS, local_kwargs

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"
PROTOCOLS_DIR = RECIPES_DIR / "protocol"
# recipe-level keys an override may set; every other override applies to each resolved run
RECIPE_ONLY_KEYS = {"seeds", "scale", "store"}
# what does not change what a run computes: excluded from its uid
NOT_IDENTITY = {
    "table",
    "row",
    "label",
    "group",
    "column",
    "paper",
    "launcher",
    "resources",
    "runs_root",
    "recipe_file",
    "recipe_sha256",
}
NOT_IDENTITY_NESTED = {
    ("data", "root"),
    ("data", "num_workers"),
    ("train", "progress"),
    ("train", "heartbeat_every_steps"),
}
SCALES = ("paper", "local")
LOSS_VARIANTS = ("entropy", "tv")
LAUNCHERS = ("auto", "slurm", "local", "inline")


class RecipeError(ValueError):
    """A recipe or an override is invalid; the message names the file, the key and what was expected."""


@dataclass
class ResolvedRun:
    uid: str
    row_config: DictConfig  # the resolved `Run` of the row, for its first seed
    seed: int
    rows: list[str] = field(default_factory=list)  # every table row this run fills (identical rows share it)

    @functools.cached_property
    def config(self) -> DictConfig:
        """The full `Run` of this seed (a copy only where the seed differs: copies are slow)."""
        if self.seed == self.row_config.seed:
            return self.row_config
        config = self.row_config.copy()
        config.seed = self.seed
        return config

    @property
    def table(self) -> str:
        return self.row_config.table

    @property
    def folder(self) -> Path:
        return Path(self.row_config.runs_root) / self.table / self.uid


def _describe(error: OmegaConfBaseException) -> str:
    key = getattr(error, "full_key", None)
    message = str(error).split("\n")[0]
    return f"key '{key}': {message}" if key else message


def _load_yaml(path: Path, what: str) -> DictConfig:
    if not path.is_file():
        raise RecipeError(f"{what} {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return OmegaConf.create(raw)


@functools.cache
def _template(schema: type) -> DictConfig:
    return OmegaConf.structured(schema)


def _structured(schema: type, raw: DictConfig, source: str) -> DictConfig:
    try:
        merged = OmegaConf.merge(_template(schema), raw)
        missing = sorted(OmegaConf.missing_keys(merged))
    except OmegaConfBaseException as error:
        raise RecipeError(f"{source}: {_describe(error)}") from error
    if missing:
        raise RecipeError(f"{source}: missing value for key(s) {', '.join(missing)}")
    return merged


def load_protocol(name: str, source: str) -> DictConfig:
    return _load_protocol(name, source).copy()


@functools.cache
def _load_protocol(name: str, source: str) -> DictConfig:
    path = PROTOCOLS_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))
        raise RecipeError(f"{source}: unknown protocol {name!r}; known: {', '.join(known)}")
    protocol = _structured(Protocol, _load_yaml(path, "protocol"), str(path))
    if protocol.name != name:
        raise RecipeError(f"{path}: key 'name' is {protocol.name!r}, expected {name!r} (the file's name)")
    return protocol


def parse_overrides(overrides: list[str]) -> tuple[DictConfig, DictConfig]:
    """Hydra-style `key=value` overrides, split into recipe-level and run-level ones.

    `launcher=slurm` selects a launcher (it sets `launcher.name`); values are YAML (`seeds=[0,1,2]`).
    """
    recipe_level, run_level = [], []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key or any(c.isspace() for c in key):
            raise RecipeError(f"override {item!r}: expected key=value (e.g. scale=local, epochs=10)")
        if key == "launcher" and "." not in value and not value.startswith("{"):
            key = "launcher.name"
        (recipe_level if key.split(".")[0] in RECIPE_ONLY_KEYS else run_level).append(f"{key}={value}")
    try:
        return OmegaConf.from_dotlist(recipe_level), OmegaConf.from_dotlist(run_level)
    except OmegaConfBaseException as error:
        raise RecipeError(f"overrides {overrides}: {_describe(error)}") from error


def _synthetic_seed(dataset: str) -> int:
    """A fixed synthetic dataset per paper dataset: different datasets stand in as different seeds."""
    return zlib.crc32(dataset.encode())


def _check_run(run: DictConfig, source: str) -> None:
    from harness.data import DATASETS

    checks = [
        (
            timm.is_model(run.model),
            "model",
            run.model,
            "a registered model, e.g. " + ", ".join(sar.models.MODEL_NAMES),
        ),
        (run.last_block in LAST_BLOCKS, "last_block", run.last_block, " | ".join(LAST_BLOCKS)),
        (run.data.dataset in DATASETS, "dataset", run.data.dataset, "one of " + ", ".join(DATASETS)),
        (run.loss.variant in LOSS_VARIANTS, "loss.variant", run.loss.variant, " | ".join(LOSS_VARIANTS)),
        (run.loss.weight >= 0, "loss.weight", run.loss.weight, "a weight >= 0"),
        (run.epochs >= 1, "epochs", run.epochs, "at least 1"),
        (0 < run.data.fraction <= 1, "data.fraction", run.data.fraction, "a fraction in (0, 1]"),
        (run.scale in SCALES, "scale", run.scale, " | ".join(SCALES)),
        (run.launcher.name in LAUNCHERS, "launcher", run.launcher.name, " | ".join(LAUNCHERS)),
        (run.protocol.batch_size >= 1, "protocol.batch_size", run.protocol.batch_size, "at least 1"),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise RecipeError(f"{source}: key '{key}': got {value!r}, expected {expected}")


def _resolve_row(recipe: DictConfig, row: DictConfig, seed: int, path: Path) -> DictConfig:
    source = f"{path}: row '{row.id}'"
    model = row.model or recipe.model
    dataset = row.dataset or recipe.dataset or recipe.data.dataset
    epochs = row.epochs or recipe.epochs
    for key, value in (("model", model), ("dataset", dataset), ("epochs", epochs)):
        if not value:
            raise RecipeError(f"{source}: no {key}: set it on the row or at the top of the recipe")
    loss = OmegaConf.to_container(row.loss)
    if not loss["sar"]:
        loss["weight"] = 0.0  # an unused weight must not make two identical runs look different
    data = OmegaConf.to_container(recipe.data)
    data.update(dataset=dataset, fraction=row.fraction if row.fraction is not None else data["fraction"])
    run: dict[str, Any] = {
        "table": recipe.store or recipe.name,
        "row": row.id,
        "label": row.label,
        "group": row.group,
        "column": row.column,
        "scale": recipe.scale,
        "model": model,
        "model_kwargs": OmegaConf.to_container(row.model_kwargs),
        "last_block": row.last_block,
        "loss": loss,
        "data": data,
        "protocol": OmegaConf.to_container(load_protocol(row.protocol or recipe.protocol, source)),
        "epochs": epochs,
        "seed": seed,
        "paper": OmegaConf.to_container(row.paper),
        "train": OmegaConf.to_container(recipe.train),
        "resources": OmegaConf.to_container(recipe.resources),
        "launcher": OmegaConf.to_container(recipe.launcher),
        "runs_root": recipe.runs_root,
        "recipe_file": str(path),
        "recipe_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if recipe.scale == "local":
        _to_local(run, recipe.local)
    # every part was typed by the Recipe and Protocol schemas already: no per-row structured merge (slow)
    return OmegaConf.create(run)


def _to_local(run: dict[str, Any], local: DictConfig) -> None:
    """The same row on the synthetic dataset, with the model family's small member and fewer epochs."""
    run["data"].update(
        stands_for=run["data"]["dataset"],
        dataset="synthetic",
        root=None,
        input_size=local.synthetic.image_size,
        num_workers=local.num_workers,
        synthetic={
            **OmegaConf.to_container(local.synthetic),
            "seed": _synthetic_seed(run["data"]["dataset"]),
        },
    )
    run["model_kwargs"] = {**local_kwargs(run["model"]), **run["model_kwargs"]}
    run["epochs"] = max(local.min_epochs, round(run["epochs"] * local.epochs_factor))
    run["protocol"].update(batch_size=local.batch_size, repeated_aug=local.repeated_aug)
    run["resources"].update(nodes=1, gpus_per_node=0)


def identity(config: DictConfig) -> dict[str, Any]:
    """The part of a run config that decides what it computes."""
    return _identity_of(OmegaConf.to_container(config, resolve=True))


def _identity_of(data: dict[str, Any]) -> dict[str, Any]:
    for key in NOT_IDENTITY:
        data.pop(key, None)
    for section, key in NOT_IDENTITY_NESTED:
        data[section].pop(key, None)
    return data


def run_uid(config: DictConfig) -> str:
    return _uid_of(identity(config))


def _uid_of(identity_data: dict[str, Any]) -> str:
    canonical = json.dumps(identity_data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [key for name, value in node.items() for key in _leaf_keys(value, f"{prefix}{name}.")]


def _typed_overrides(run_overrides: DictConfig, path: Path) -> list[tuple[str, Any]]:
    """Run-level overrides checked against the `Run` schema once (unknown keys, types), and their values
    converted to the schema's types, so that `protocol.lr=1` and `protocol.lr=1.0` give the same uid."""
    try:
        typed = OmegaConf.merge(_template(Run), run_overrides)
    except OmegaConfBaseException as error:
        raise RecipeError(f"override of {path}: {_describe(error)}") from error
    keys = [key.rstrip(".") for key in _leaf_keys(OmegaConf.to_container(run_overrides))]
    return [
        (
            key,
            OmegaConf.to_object(value)
            if OmegaConf.is_config(value := OmegaConf.select(typed, key))
            else value,
        )
        for key in keys
        if key
    ]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> tuple[DictConfig, list[ResolvedRun]]:
    """Validate a recipe with its overrides and expand it into runs (rows x seeds, identical rows merged)."""
    path = Path(path)
    recipe_overrides, run_overrides = parse_overrides(list(overrides or []))
    recipe = _structured(Recipe, _load_yaml(path, "recipe"), str(path))
    try:
        recipe = OmegaConf.merge(recipe, recipe_overrides)
    except OmegaConfBaseException as error:
        raise RecipeError(f"override of {path}: {_describe(error)}") from error
    if recipe.scale not in SCALES:
        raise RecipeError(f"{path}: key 'scale': got {recipe.scale!r}, expected {' | '.join(SCALES)}")
    if not recipe.rows:
        raise RecipeError(f"{path}: key 'rows': a recipe needs at least one row")
    ids = [row.id for row in recipe.rows]
    if len(set(ids)) != len(ids):
        raise RecipeError(f"{path}: key 'rows': row ids must be unique, got duplicates in {ids}")
    for row in recipe.rows:
        if row.baseline is not None and row.baseline not in ids:
            raise RecipeError(f"{path}: row '{row.id}': key 'baseline': no row has id {row.baseline!r}")
    typed = _typed_overrides(run_overrides, path)
    runs: dict[str, ResolvedRun] = {}
    for row in recipe.rows:  # resolved once per row; seeds differ by `seed` only (unless an override sets it)
        resolved = _resolve_row(recipe, row, recipe.seeds[0], path)
        for key, value in typed:
            OmegaConf.update(resolved, key, value, merge=False)
        _check_run(resolved, f"{path}: row '{row.id}'")
        seeds = [resolved.seed] if "seed" in run_overrides else recipe.seeds
        row_identity = identity(resolved)
        for seed in seeds:
            uid = _uid_of({**row_identity, "seed": seed})
            runs.setdefault(uid, ResolvedRun(uid, resolved, seed)).rows.append(row.id)
    return recipe, list(runs.values())


def list_recipes() -> list[tuple[Path, str, str]]:
    """(path, title, what it reproduces) for every recipe under recipes/."""
    found = []
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        raw = _load_yaml(path, "recipe")
        found.append((path, str(raw.get("title", "")), str(raw.get("reproduces", ""))))
    return found
