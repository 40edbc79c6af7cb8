"""Validate a recipe and expand it into fully resolved runs (rows x seeds x sweep points), each with a
stable uid computed from the fields its schema marks `computed`.

Nothing here launches or writes anything: every error is raised before a run folder exists, and names the
file or the override, the key and what was expected.
"""

import functools
import hashlib
import json
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode

import sar  # noqa: F401  (registers the SAR-ready models with timm)
from harness.config import RecipeError, runs_root
from harness.config.compose import compose_recipe
from harness.config.overrides import Setting, apply, parse
from harness.config.schema import Run, identity_of
from harness.data import DATASETS, EVALUATION_ONLY
from sar.models import LAST_BLOCKS, LOCAL_KWARGS, MODEL_NAMES

SCALES = ("paper", "local")
LOSS_VARIANTS = ("entropy", "tv")
LAUNCHERS = ("auto", "slurm", "local", "inline")
PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass
class ResolvedRun:
    uid: str
    row_config: DictConfig  # the resolved `Run` of the row, for its first seed
    seed: int
    rows: list[str] = field(default_factory=list)  # every table row this run fills (identical rows share it)
    sweeps: list[tuple[str, ...]] = field(default_factory=list)  # the sweep points (`-m`) that give this run

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


def _synthetic_seed(dataset: str) -> int:
    """A fixed synthetic dataset per paper dataset: different datasets stand in as different seeds."""
    return zlib.crc32(dataset.encode())


class _Blame:
    """Where a bad value came from: the override(s) that set the key, else the recipe's row."""

    def __init__(self, path: Path, row: str, point: tuple[Setting, ...]) -> None:
        self.path, self.row, self.point = path, row, point

    def __call__(self, *keys: str) -> str:
        texts = [
            s.text
            for s in self.point
            if any(s.key == k or s.key.startswith(k + ".") or k.startswith(s.key + ".") for k in keys)
        ]
        if texts:
            shown = ", ".join(repr(t) for t in dict.fromkeys(texts))
            return f"override {shown} (row '{self.row}' of {self.path})"
        return f"{self.path}: row '{self.row}'"


def _check_values(run: dict[str, Any], blame: _Blame) -> None:
    loss, data, protocol = run["loss"], run["data"], run["protocol"]
    checks = [
        (
            timm.is_model(run["model"]),
            "model",
            run["model"],
            "a registered model, e.g. " + ", ".join(MODEL_NAMES),
        ),
        (run["last_block"] in LAST_BLOCKS, "last_block", run["last_block"], " | ".join(LAST_BLOCKS)),
        (
            data["dataset"] in set(DATASETS) - EVALUATION_ONLY,
            "data.dataset",
            data["dataset"],
            "a dataset to train on: one of " + ", ".join(sorted(set(DATASETS) - EVALUATION_ONLY)),
        ),
        (loss["variant"] in LOSS_VARIANTS, "loss.variant", loss["variant"], " | ".join(LOSS_VARIANTS)),
        (loss["weight"] >= 0, "loss.weight", loss["weight"], "a weight >= 0"),
        (run["epochs"] >= 1, "epochs", run["epochs"], "at least 1"),
        (0 < data["fraction"] <= 1, "data.fraction", data["fraction"], "a fraction in (0, 1]"),
        (data["input_size"] >= 1, "data.input_size", data["input_size"], "at least 1"),
        (
            run["launcher"]["name"] in LAUNCHERS,
            "launcher.name",
            run["launcher"]["name"],
            " | ".join(LAUNCHERS),
        ),
        (protocol["batch_size"] >= 1, "protocol.batch_size", protocol["batch_size"], "at least 1"),
        (protocol["warmup_epochs"] >= 0, "protocol.warmup_epochs", protocol["warmup_epochs"], "at least 0"),
        (protocol["lr"] > 0, "protocol.lr", protocol["lr"], "a learning rate > 0"),
        (run["train"]["eval_every"] >= 1, "train.eval_every", run["train"]["eval_every"], "at least 1"),
    ]
    for ok, key, value, expected in checks:
        if not ok:
            raise RecipeError(f"{blame(key)}: key '{key}': got {value!r}, expected {expected}")


def hashable(value: Any) -> Any:
    """Nested dicts and lists as sorted tuples: a cache key for model arguments."""
    if isinstance(value, dict):
        return tuple(sorted((k, hashable(v)) for k, v in value.items()))
    return tuple(hashable(v) for v in value) if isinstance(value, list | tuple) else value


class _SkipInPlaceOnMeta(TorchFunctionMode):
    """Weight init on meta tensors computes nothing, yet timm's trunc_normal_ decomposes into dozens of
    Python-level ops per parameter: in-place ops on meta tensors return their input (shapes unchanged)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and args:
            if isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
        return func(*args, **(kwargs or {}))


@functools.cache
def _build_error(model: str, kwargs: tuple, input_size: int) -> str | None:
    """Why this model cannot be built and run on one image, or None; on the meta device (no memory).
    Cached per architecture: the last-block variants (checked by name) share every shape, so one build
    per model serves Tab. 1b's four."""
    try:
        with torch.device("meta"), torch.no_grad():
            with _SkipInPlaceOnMeta():
                net = timm.create_model(model, **dict(kwargs))
            net(torch.empty(1, 3, input_size, input_size))
    except Exception as error:  # whatever the constructor or the forward raises is the user's to read
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return None


def _check_model(run: dict[str, Any], blame: _Blame) -> None:
    kwargs = {**run["model_kwargs"], "drop_path_rate": run["protocol"]["drop_path"]}
    error = _build_error(run["model"], hashable(kwargs), run["data"]["input_size"])
    if error:
        shown = ", ".join(f"{k}={v!r}" for k, v in run["model_kwargs"].items())
        raise RecipeError(
            f"{blame('model', 'model_kwargs', 'last_block', 'data.input_size')}: key 'model_kwargs': "
            f"{run['model']}({shown}) at {run['data']['input_size']} px cannot be built: {error}"
        )


def _resolve_row(
    recipe: DictConfig, row: DictConfig, protocol: DictConfig, path: Path, sha256: str
) -> dict[str, Any]:
    """The row as a paper-scale run (a plain dict), its unset fields taken from the recipe."""
    source = f"{path}: row '{row.id}'"
    model = row.model or recipe.model
    dataset = row.dataset or recipe.dataset or recipe.data.dataset
    epochs = row.epochs or recipe.epochs
    for key, value in (("model", model), ("dataset", dataset), ("epochs", epochs)):
        if not value:
            raise RecipeError(f"{source}: no {key}: set it on the row or at the top of the recipe")
    data = OmegaConf.to_container(recipe.data)
    data.update(dataset=dataset, fraction=row.fraction if row.fraction is not None else data["fraction"])
    return {
        "table": recipe.store or recipe.name,
        "row": row.id,
        "label": row.label,
        "group": row.group,
        "column": row.column,
        "scale": recipe.scale,
        "model": model,
        "model_kwargs": OmegaConf.to_container(row.model_kwargs),
        "last_block": row.last_block,
        "loss": OmegaConf.to_container(row.loss),
        "data": data,
        "protocol": OmegaConf.to_container(protocol),
        "epochs": epochs,
        "seed": recipe.seeds[0],
        "paper": OmegaConf.to_container(row.paper),
        "train": OmegaConf.to_container(recipe.train),
        "resources": OmegaConf.to_container(recipe.resources),
        "launcher": OmegaConf.to_container(recipe.launcher),
        "runs_root": recipe.runs_root,
        "recipe_file": str(path),
        "recipe_sha256": sha256,
    }


def _anchor_folders(run: dict[str, Any]) -> None:
    """The run store and submitit's folder as absolute paths, fixed when the run is resolved: the same
    runs whatever folder `run`, `status` or a requeued job starts from."""
    run["runs_root"] = runs_root(run["runs_root"])
    folder = run["launcher"]["folder"] or Path(run["runs_root"]) / "_submitit"
    run["launcher"]["folder"] = str(Path(folder).expanduser().resolve())


def _to_local(run: dict[str, Any], local: DictConfig) -> None:
    """The same run on the synthetic dataset, with the model family's small member and fewer epochs."""
    if run["model"] not in LOCAL_KWARGS:
        raise RecipeError(
            f"model {run['model']!r} has no local-scale member; local scale knows {', '.join(LOCAL_KWARGS)}"
        )
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
    run["model_kwargs"] = {**LOCAL_KWARGS[run["model"]], **run["model_kwargs"]}
    run["epochs"] = max(local.min_epochs, round(run["epochs"] * local.epochs_factor))
    run["protocol"].update(batch_size=local.batch_size, repeated_aug=local.repeated_aug)
    run["resources"].update(nodes=1, gpus_per_node=0, cpus_per_task=local.cpus, mem_gb=local.mem_gb)


def identity(config: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that decides what it computes (the fields marked `computed`)."""
    data = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    return identity_of(Run, data)


def run_uid(config: DictConfig | dict[str, Any]) -> str:
    return _uid_of(identity(config))


def _uid_of(identity_data: dict[str, Any]) -> str:
    canonical = json.dumps(identity_data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _check_recipe(recipe: DictConfig, path: Path) -> None:
    for key in ("name", "store"):
        value = recipe[key]
        if value is not None and not PLAIN_NAME.fullmatch(value):
            raise RecipeError(
                f"{path}: key '{key}': got {value!r}, expected a plain name (letters, digits, _ and -, "
                "starting with a letter): it names the run store's folder"
            )
    if recipe.scale not in SCALES:
        raise RecipeError(f"{path}: key 'scale': got {recipe.scale!r}, expected {' | '.join(SCALES)}")
    if not recipe.seeds:
        raise RecipeError(f"{path}: key 'seeds': expected at least one seed, e.g. seeds=[0,1,2]")
    if not recipe.rows:
        raise RecipeError(f"{path}: key 'rows': a recipe needs at least one row")
    ids = [row.id for row in recipe.rows]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        raise RecipeError(f"{path}: key 'rows': row ids must be unique, got duplicates {duplicates}")
    for row in recipe.rows:
        if row.baseline is not None and row.baseline not in ids:
            raise RecipeError(f"{path}: row '{row.id}': key 'baseline': no row has id {row.baseline!r}")
    groups = {row.group for row in recipe.rows}
    if recipe.lambda_sweep is not None and recipe.lambda_sweep not in groups:
        raise RecipeError(f"{path}: key 'lambda_sweep': no row has group {recipe.lambda_sweep!r}")


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, multirun: bool = False
) -> tuple[DictConfig, list[ResolvedRun]]:
    """Validate a recipe with its overrides and expand it into runs (rows x seeds x sweep points);
    identical runs merge by uid."""
    path = Path(path)
    parsed = parse(list(overrides or []), multirun)
    recipe, protocols = compose_recipe(path, parsed.recipe, parsed.protocols)
    _check_recipe(recipe, path)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    runs: dict[str, ResolvedRun] = {}
    for point in parsed.points:
        selected = [s.value for s in point if s.kind == "select"]
        sweep = tuple(s.text for s in point if s.key in parsed.swept)
        for row in recipe.rows:
            name = selected[-1] if selected else row.protocol
            protocol = protocols[name] if name else recipe.protocol
            if protocol is None:
                raise RecipeError(
                    f"{path}: row '{row.id}': no protocol: name one on the row (protocol: deit) or "
                    "choose the recipe's in its defaults list (- protocol: deit)"
                )
            run = _resolve_row(recipe, row, protocol, path, sha256)
            blame = _Blame(path, row.id, point)
            apply(run, point, row.id)
            _anchor_folders(run)
            if not run["loss"]["sar"]:  # an unused weight must not make two identical runs look different
                run["loss"]["weight"] = 0.0
            _check_values(run, blame)
            if recipe.scale == "local":
                _to_local(run, recipe.local)
            _check_model(run, blame)
            resolved = OmegaConf.create(run)
            seeds = [run["seed"]] if any(s.key == "seed" for s in point) else list(recipe.seeds)
            row_identity = identity(run)
            for seed in seeds:
                uid = _uid_of({**row_identity, "seed": seed})
                found = runs.setdefault(uid, ResolvedRun(uid, resolved, seed))
                found.rows = list(dict.fromkeys([*found.rows, row.id]))
                found.sweeps = list(dict.fromkeys([*found.sweeps, sweep] if sweep else found.sweeps))
    return recipe, list(runs.values())
