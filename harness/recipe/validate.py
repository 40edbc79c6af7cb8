"""Checks of a recipe and of each run it resolves to, before anything is launched or written. Every error
names the file or the override, the key and what was expected. What a type or an enum says, OmegaConf
checks on composition (the recipe) and on `typed_run` (each run); these are the checks it cannot make."""

import functools
import re
from pathlib import Path
from typing import Any

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode

import sar  # noqa: F401  (registers the SAR-ready models with timm)
from harness.config import RecipeError, bounds, hashable
from harness.config.overrides import Setting
from harness.config.schema import field_types
from harness.core import anyvit
from harness.data import DATASETS, EVALUATION_ONLY
from harness.engines.spec import Consumes, Progress, engines, spec_of
from harness.eval import EVALUATIONS, METRICS
from harness.text import shown
from sar.models import LAST_BLOCKS, MODEL_NAMES
from sar.models.local import TIMM_FAMILIES

PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SHOWN_KWARGS = 12  # model arguments an error message names
SEGMENTATION_DATASETS = ("ade20k",)


class Blame:
    """Where a bad value came from: the override(s) that set the key, else the recipe's row."""

    def __init__(self, path: Path, row: str, point: tuple[Setting, ...], note: str = "") -> None:
        self.path, self.row, self.point, self.note = path, row, point, note  # note: " at local scale"

    def __call__(self, *keys: str) -> str:
        texts = [
            s.text
            for s in self.point
            if any(s.key == k or s.key.startswith(k + ".") or k.startswith(s.key + ".") for k in keys)
        ]
        if texts:
            shown = ", ".join(repr(t) for t in dict.fromkeys(texts))
            return f"override {shown} (row '{self.row}' of {self.path}){self.note}"
        return f"{self.path}: row '{self.row}'{self.note}"


def check_values(run: dict[str, Any], blame: Blame) -> None:
    """The values of a resolved run that its types allow but training cannot take."""
    loss, data, protocol = run["loss"], run["data"], run["protocol"]
    spec = spec_of(run["engine"])
    timm_family = anyvit.is_timm_family(run["model"])
    checks = [
        (
            run["model"] in MODEL_NAMES or (timm_family and timm.is_model(run["model"])),
            "model",
            run["model"],
            f"a registered model: a SAR-ready one ({', '.join(MODEL_NAMES)}) or one of timm's "
            f"{', '.join(TIMM_FAMILIES)} (sar.attach gives it the last block)",
        ),
        (
            not timm_family or "." not in run["model"],
            "model",
            run["model"],
            f"an architecture name without a pretrained tag ({run['model'].split('.')[0]}): nothing "
            f"downloads; a local weights file is model_kwargs.{anyvit.PRETRAINED_FILE}",
        ),
        (
            not timm_family or loss["similarity"] == "dot",
            "loss.similarity",
            loss["similarity"],
            f"dot: {run['model']} gets its S from sar.attach, which gives Eq. 4's only",
        ),
        (
            not timm_family or anyvit.pretrained_problem(run["model_kwargs"]) is None,
            "model_kwargs",
            run["model_kwargs"],
            anyvit.pretrained_problem(run["model_kwargs"]) or "",
        ),
        (run["last_block"] in LAST_BLOCKS, "last_block", run["last_block"], " | ".join(LAST_BLOCKS)),
        (
            data["dataset"] in set(DATASETS) - EVALUATION_ONLY,
            "data.dataset",
            data["dataset"],
            "a dataset to train on: one of " + ", ".join(sorted(set(DATASETS) - EVALUATION_ONLY)),
        ),
        (loss["weight"] >= 0, "loss.weight", loss["weight"], "a weight >= 0"),
        (loss["warmup_epochs"] >= 0, "loss.warmup_epochs", loss["warmup_epochs"], "at least 0"),
        (loss["drloc_weight"] >= 0, "loss.drloc_weight", loss["drloc_weight"], "a weight >= 0 (0: no DRLoc)"),
        (loss["drloc_pairs"] >= 1, "loss.drloc_pairs", loss["drloc_pairs"], "at least 1"),
        (run["epochs"] >= 1 or spec.progress is not Progress.epoch, "epochs", run["epochs"], "at least 1"),
        (0 < data["fraction"] <= 1, "data.fraction", data["fraction"], "a fraction in (0, 1]"),
        (data["input_size"] >= 1, "data.input_size", data["input_size"], "at least 1"),
        (run["train"]["eval_every"] >= 1, "train.eval_every", run["train"]["eval_every"], "at least 1"),
        (run["train"]["log_every"] >= 1, "train.log_every", run["train"]["log_every"], "at least 1"),
        *[
            (name in METRICS, "paper", name, "a metric name: one of " + ", ".join(METRICS))
            for name in run["paper"]
        ],
    ]
    least = {
        "batch_size": (1, "at least 1"),
        "warmup_epochs": (0, "at least 0"),
        "cooldown_epochs": (0, "at least 0"),
    }
    checks += [
        (protocol[key] >= bound, f"protocol.{key}", protocol[key], expected)
        for key, (bound, expected) in least.items()
        if key in protocol
    ]
    if "lr" in protocol:
        checks.append((protocol["lr"] > 0, "protocol.lr", protocol["lr"], "a learning rate > 0"))
    if protocol.get("reports") == "best_ema":
        checks.append(
            (
                protocol.get("model_ema_decay") is not None,
                "protocol.reports",
                "best_ema",
                "final or best: best_ema needs protocol.model_ema_decay",
            )
        )
    if "segmentation" in protocol or data["dataset"] in SEGMENTATION_DATASETS:
        checks += _segmentation_checks(run)
    problems = [(key, bounds.got(value, expected)) for ok, key, value, expected in checks if not ok]
    problems += bounds.run_values(run)
    if problems:
        key, problem = problems[0]
        raise RecipeError(f"{blame(key)}: key '{key}': {problem}")


def _segmentation_checks(run: dict[str, Any]) -> list[tuple[bool, str, Any, str]]:
    """A segmentation run trains on a segmentation dataset with cross-entropy only (Tab. 12 adds no
    L_se), and its iteration counts make sense; a segmentation dataset trains nothing else."""
    seg, dataset = run["protocol"].get("segmentation") or {}, run["data"]["dataset"]
    if seg:  # the synthetic set segments its objects (label maps of its masks)
        readable = (*SEGMENTATION_DATASETS, "synthetic")
        dataset_check = (dataset in readable, f"a segmentation dataset: {', '.join(readable)}")
    else:
        segmenting = " | ".join(
            name for name, s in engines().items() if "segmentation" in field_types(s.protocol)
        )
        dataset_check = (False, f"a classification dataset: {dataset} trains engine: {segmenting} only")
    checks = [
        (dataset_check[0], "data.dataset", dataset, dataset_check[1]),
        (
            not seg or not run["loss"]["sar"],
            "loss.sar",
            run["loss"]["sar"],
            "false: segmentation trains with L_ce only",
        ),
    ]
    for key in ("iterations", "eval_every", "checkpoint_every", "crop_size", "size_divisor"):
        if key in seg:
            checks.append((seg[key] >= 1, f"protocol.segmentation.{key}", seg[key], "at least 1"))
    return checks


class _SkipInPlaceOnMeta(TorchFunctionMode):
    """Weight init on meta tensors computes nothing, yet timm's trunc_normal_ decomposes into dozens of
    Python-level ops per parameter: in-place ops on meta tensors return their input (shapes unchanged)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.startswith("_") and args:
            if isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
        return func(*args, **(kwargs or {}))


def _first_line(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


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
        return _first_line(error)
    return None


@functools.cache
def _attach_error(model: str, kwargs: tuple, last_block: str, input_size: int) -> tuple[str, str] | None:
    """Why timm's `model` cannot be built with SAR's last block (`sar.attach`) and run on one image, on
    the meta device: ('model', attach's reason), ('model_kwargs', the build's) or None.
    Built as `harness.core.anyvit.build` builds it, without loading pretrained weights (same shapes)."""
    kwargs = dict(kwargs)
    drop_path = kwargs.pop("drop_path_rate")
    kwargs.pop(anyvit.PRETRAINED_FILE, None)
    try:
        with torch.device("meta"), torch.no_grad():
            with _SkipInPlaceOnMeta():
                net = anyvit.build(model, 1, last_block, drop_path, kwargs, input_size)
            net(torch.empty(1, 3, input_size, input_size))  # S's autocast guard takes no meta device
    except Exception as error:  # sar.attach's refusals (no [CLS] token, another family) say its name
        if isinstance(error, ValueError) and str(error).startswith("sar.attach"):
            return "model", str(error).removeprefix("sar.attach: ")
        return "model_kwargs", _first_line(error)
    return None


def check_model(run: dict[str, Any], blame: Blame) -> None:
    """The run's model builds and runs one image, on the meta device; a timm family model with the last
    block `sar.attach` gives it (its refusal named under key 'model')."""
    kwargs = {**run["model_kwargs"], "drop_path_rate": run["protocol"].get("drop_path", 0.0)}
    input_size = run["data"]["input_size"]
    if anyvit.is_timm_family(run["model"]):
        found = _attach_error(run["model"], hashable(kwargs), run["last_block"], input_size)
        if found and found[0] == "model":
            raise RecipeError(
                f"{blame('model', 'last_block')}: key 'model': got {run['model']!r}, which sar.attach cannot "
                f"take: {found[1]}"
            )
        error = found and found[1]
    else:
        error = _build_error(run["model"], hashable(kwargs), input_size)
    if error:
        kwargs = ", ".join(f"{k}={shown(v)}" for k, v in list(run["model_kwargs"].items())[:SHOWN_KWARGS])
        more = len(run["model_kwargs"]) - SHOWN_KWARGS
        kwargs += f", and {more} more" if more > 0 else ""
        raise RecipeError(
            f"{blame('model', 'model_kwargs', 'last_block', 'data.input_size')}: key 'model_kwargs': "
            f"{run['model']}({kwargs}) at {run['data']['input_size']} px cannot be built: {error}"
        )


def _recipe_source(path: Path, overrides: list[str], key: str) -> str:
    """Where a recipe-level value came from: the last override that set its key, else the file."""
    texts = [text for text in overrides if _overlap(text.lstrip("+~").split("=")[0], key)]
    return f"override {texts[-1]!r} ({path})" if texts else str(path)


def _overlap(set_key: str, key: str) -> bool:
    return set_key == key or key.startswith(set_key + ".") or set_key.startswith(key + ".")


def check_recipe(recipe: DictConfig, path: Path, overrides: list[str]) -> None:
    """The recipe's own keys: seeds, the local block, names, rows, baselines, metrics, engines."""
    problems = bounds.seeds(list(recipe.seeds), "seeds")
    if recipe.scale == "local":
        problems += bounds.local_block(OmegaConf.to_container(recipe.local))
    if problems:
        key, problem = problems[0]
        raise RecipeError(f"{_recipe_source(path, overrides, key)}: key '{key}': {problem}")
    for key in ("name", "store"):
        value = recipe[key]
        if value is not None and not PLAIN_NAME.fullmatch(value):
            raise RecipeError(
                f"{path}: key '{key}': got {value!r}, expected a plain name (letters, digits, _ and -, "
                "starting with a letter): it names the run store's folder"
            )
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
    for name in recipe.metrics:
        if name not in METRICS:
            raise RecipeError(f"{path}: key 'metrics': unknown metric {name!r}; known: {', '.join(METRICS)}")
    for row in recipe.rows:
        _check_engine(recipe, row, path)
    groups = {row.group for row in recipe.rows}
    if recipe.lambda_sweep is not None and recipe.lambda_sweep not in groups:
        raise RecipeError(f"{path}: key 'lambda_sweep': no row has group {recipe.lambda_sweep!r}")


def _check_engine(recipe: DictConfig, row: DictConfig, path: Path) -> None:
    """A row whose engine consumes a run names it (`from:`); a row whose engine trains from scratch does
    not; an evaluation has metrics to measure."""
    source = f"{path}: row '{row.id}'"
    spec, upstream = spec_of(row.engine or recipe.engine, source), row["from"]
    consuming = [name for name, other in engines().items() if other.consumes is not Consumes.nothing]
    if spec.consumes is Consumes.nothing and upstream is not None:
        raise RecipeError(
            f"{source}: key 'from': a {spec.name} row trains from scratch; set the engine of a row that "
            f"consumes another run: {' | '.join(consuming)}"
        )
    if spec.consumes is not Consumes.nothing and upstream is None:
        raise RecipeError(
            f"{source}: key 'from': an {spec.name} row needs the run it consumes, e.g. "
            "from: {recipe: table2, row: vit-s, checkpoint: final}"
        )
    if spec.progress is Progress.none:
        if not recipe.eval.metrics:
            raise RecipeError(f"{path}: key 'eval.metrics': an {spec.name} row needs at least one metric")
        for name in recipe.eval.metrics:
            if name not in EVALUATIONS:
                raise RecipeError(
                    f"{path}: key 'eval.metrics': {name!r} is not measured by an {spec.name} run; known: "
                    + ", ".join(EVALUATIONS)
                )
