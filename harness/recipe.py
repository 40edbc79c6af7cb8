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
from harness.config import RECIPES_DIR, RecipeError, bounds, runs_root
from harness.config.compose import compose_recipe
from harness.config.overrides import Setting, apply, parse
from harness.config.schema import Loss, Run, identity_of
from harness.data import DATASETS, EVALUATION_ONLY
from harness.data.synthetic import MAX_CLASSES
from harness.eval import EVALUATIONS, METRICS
from harness.ssl import PRETRAINING_ENGINES
from harness.text import shown
from sar.models import LAST_BLOCKS, LOCAL_KWARGS, MODEL_NAMES
from sar.models.base import SIMILARITIES

SCALES = ("paper", "local")
# datasets whose local stand-in keeps their class count: Tab. 4's transfer targets, Tab. 3's small sets
TRANSFER_TARGETS = (
    "cifar10",
    "cifar100",
    "flowers102",
    "pets",
    "stanford_cars",
    "domainnet_clipart",
    "domainnet_painting",
    "domainnet_sketch",
)
AMP_MODES = ("bf16", "fp16", "off")
REPORTED = ("final", "best", "best_ema")
ENGINES = ("supervised", "finetune", "evaluate", "mocov3", "dino", "linear_probe", "segmentation")
TRAINING_ENGINES = ("supervised", "finetune", *PRETRAINING_ENGINES)
FROM_SCRATCH = ("supervised", *PRETRAINING_ENGINES)
PROTOCOL_SECTIONS = {  # what each engine reads
    "mocov3": "mocov3",
    "dino": "dino",
    "linear_probe": "probe",
    "segmentation": "segmentation",
}
NO_EPOCHS = ("evaluate", "segmentation")  # an evaluation, and training counted in iterations
ITERATION_COUNTS = ("iterations", "eval_every", "checkpoint_every")  # what local scale shrinks
FPN_WIDTHS = ("neck_channels", "head_channels")
SEGMENTATION_DATASETS = ("ade20k",)
PROBE_FEATURES = ("last4", "final")
LOSS_CROPS = ("global", "all")
CHECKPOINTS = ("final", "best")
LOSS_VARIANTS = ("entropy", "tv")
LOSS_SCHEDULES = ("constant", "warmup_cosine")
LAUNCHERS = ("auto", "slurm", "local", "inline")
PLAIN_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
SHOWN_KWARGS = 12  # model arguments an error message names


@dataclass
class ResolvedRun:
    uid: str
    row_config: DictConfig  # the resolved `Run` of the row, for its first seed
    seed: int
    rows: list[str] = field(default_factory=list)  # every table row this run fills (identical rows share it)
    sweeps: list[tuple[str, ...]] = field(default_factory=list)  # the sweep points (`-m`) that give this run
    upstream: "ResolvedRun | None" = None  # the run this one fine-tunes or evaluates (same seed)

    @functools.cached_property
    def config(self) -> DictConfig:
        """The full `Run` of this seed (a copy only where it differs from the row's: copies are slow)."""
        same_upstream = self.upstream is None or self.row_config.upstream.uid == self.upstream.uid
        if self.seed == self.row_config.seed and same_upstream:
            return self.row_config
        config = self.row_config.copy()
        config.seed = self.seed
        if self.upstream is not None:
            config.upstream.uid, config.upstream.folder = self.upstream.uid, str(self.upstream.folder)
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
        (loss["similarity"] in SIMILARITIES, "loss.similarity", loss["similarity"], " | ".join(SIMILARITIES)),
        (loss["weight"] >= 0, "loss.weight", loss["weight"], "a weight >= 0"),
        (loss["schedule"] in LOSS_SCHEDULES, "loss.schedule", loss["schedule"], " | ".join(LOSS_SCHEDULES)),
        (loss["warmup_epochs"] >= 0, "loss.warmup_epochs", loss["warmup_epochs"], "at least 0"),
        (loss["drloc_weight"] >= 0, "loss.drloc_weight", loss["drloc_weight"], "a weight >= 0 (0: no DRLoc)"),
        (loss["drloc_pairs"] >= 1, "loss.drloc_pairs", loss["drloc_pairs"], "at least 1"),
        (loss["crops"] in LOSS_CROPS, "loss.crops", loss["crops"], " | ".join(LOSS_CROPS)),
        (run["engine"] in ENGINES, "engine", run["engine"], " | ".join(ENGINES)),
        (
            run["epochs"] >= 1 or run["engine"] in NO_EPOCHS,
            "epochs",
            run["epochs"],
            "at least 1",
        ),
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
        (
            protocol["cooldown_epochs"] >= 0,
            "protocol.cooldown_epochs",
            protocol["cooldown_epochs"],
            "at least 0",
        ),
        (protocol["reports"] in REPORTED, "protocol.reports", protocol["reports"], " | ".join(REPORTED)),
        (
            protocol["model_ema_decay"] is not None or protocol["reports"] != "best_ema",
            "protocol.reports",
            protocol["reports"],
            "final or best: best_ema needs protocol.model_ema_decay",
        ),
        (protocol["lr"] > 0, "protocol.lr", protocol["lr"], "a learning rate > 0"),
        (run["train"]["eval_every"] >= 1, "train.eval_every", run["train"]["eval_every"], "at least 1"),
        (protocol["amp"] in AMP_MODES, "protocol.amp", protocol["amp"], " | ".join(AMP_MODES)),
        (run["train"]["log_every"] >= 1, "train.log_every", run["train"]["log_every"], "at least 1"),
        *[
            (name in METRICS, "paper", name, "a metric name: one of " + ", ".join(METRICS))
            for name in run["paper"]
        ],
    ]
    section = PROTOCOL_SECTIONS.get(run["engine"])
    if section is not None:
        checks.append(
            (
                protocol[section] is not None,
                "protocol",
                protocol["name"],
                f"a protocol with a '{section}' section for engine {run['engine']} (recipes/protocol/)",
            )
        )
    if run["engine"] == "segmentation" or data["dataset"] in SEGMENTATION_DATASETS:
        checks += _segmentation_checks(run)
    if protocol["probe"] is not None:
        features = protocol["probe"]["features"]
        checks.append(
            (features in PROBE_FEATURES, "protocol.probe.features", features, " | ".join(PROBE_FEATURES))
        )
    problems = [(key, bounds.got(value, expected)) for ok, key, value, expected in checks if not ok]
    problems += bounds.run_values(run)
    if problems:
        key, problem = problems[0]
        raise RecipeError(f"{blame(key)}: key '{key}': {problem}")


def _segmentation_checks(run: dict[str, Any]) -> list[tuple[bool, str, Any, str]]:
    """A segmentation run trains on a segmentation dataset with cross-entropy only (Tab. 12 adds no
    L_se), and its iteration counts make sense; a segmentation dataset trains nothing else."""
    seg, dataset = run["protocol"]["segmentation"] or {}, run["data"]["dataset"]
    if run["engine"] == "segmentation":  # the synthetic set segments its objects (label maps of its masks)
        readable = (*SEGMENTATION_DATASETS, "synthetic")
        dataset_check = (dataset in readable, f"a segmentation dataset: {', '.join(readable)}")
    else:
        dataset_check = (False, f"a classification dataset: {dataset} trains engine: segmentation only")
    checks = [
        (dataset_check[0], "data.dataset", dataset, dataset_check[1]),
        (not run["loss"]["sar"], "loss.sar", run["loss"]["sar"], "false: segmentation trains with L_ce only"),
    ]
    for key in ("iterations", "eval_every", "checkpoint_every", "crop_size", "size_divisor"):
        if key in seg:
            checks.append((seg[key] >= 1, f"protocol.segmentation.{key}", seg[key], "at least 1"))
    return checks


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
        kwargs = ", ".join(f"{k}={shown(v)}" for k, v in list(run["model_kwargs"].items())[:SHOWN_KWARGS])
        more = len(run["model_kwargs"]) - SHOWN_KWARGS
        kwargs += f", and {more} more" if more > 0 else ""
        raise RecipeError(
            f"{blame('model', 'model_kwargs', 'last_block', 'data.input_size')}: key 'model_kwargs': "
            f"{run['model']}({kwargs}) at {run['data']['input_size']} px cannot be built: {error}"
        )


def _resolve_row(
    recipe: DictConfig, row: DictConfig, protocol: DictConfig, path: Path, sha256: str
) -> dict[str, Any]:
    """The row as a paper-scale run (a plain dict), its unset fields taken from the recipe."""
    source = f"{path}: row '{row.id}'"
    engine = row.engine or recipe.engine
    model = row.model or recipe.model
    dataset = row.dataset or recipe.dataset or recipe.data.dataset
    epochs = 0 if engine in NO_EPOCHS else row.epochs or recipe.epochs
    for key, value in (("model", model), ("dataset", dataset), ("epochs", epochs or engine in NO_EPOCHS)):
        if not value:
            raise RecipeError(f"{source}: no {key}: set it on the row or at the top of the recipe")
    upstream = row["from"]
    data = OmegaConf.to_container(recipe.data)
    data.update(dataset=dataset, fraction=row.fraction if row.fraction is not None else data["fraction"])
    return {
        "table": recipe.store or recipe.name,
        "row": row.id,
        "label": row.label,
        "group": row.group,
        "column": row.column,
        "scale": recipe.scale,
        "engine": engine,
        "upstream": None
        if upstream is None
        else {**OmegaConf.to_container(upstream), "uid": "", "folder": ""},
        "model": model,
        "model_kwargs": OmegaConf.to_container(row.model_kwargs),
        "last_block": row.last_block,
        "loss": OmegaConf.to_container(row.loss),
        "data": data,
        "protocol": OmegaConf.to_container(protocol),
        "epochs": epochs,
        "seed": recipe.seeds[0],
        "paper": OmegaConf.to_container(row.paper),
        "paper_points": OmegaConf.to_container(row.paper_points),
        "train": OmegaConf.to_container(recipe.train),
        "eval": OmegaConf.to_container(recipe.eval),
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
    dataset = run["data"]["dataset"]
    shrink = local.synthetic.image_size / run["data"]["input_size"]
    synthetic = {**OmegaConf.to_container(local.synthetic), "seed": _synthetic_seed(dataset)}
    if dataset in TRANSFER_TARGETS:  # the target's own class count, on a few images per class
        classes = min(DATASETS[dataset].num_classes, MAX_CLASSES)
        synthetic.update(
            num_classes=classes,
            train_per_class=max(2, local.target_train_images // classes),
            val_per_class=max(1, local.target_val_images // classes),
        )
    run["data"].update(
        stands_for=dataset,
        dataset="synthetic",
        root=None,
        input_size=local.synthetic.image_size,
        num_workers=local.num_workers,
        synthetic=synthetic,
    )
    run["eval"].update(input_size=None, roots={})  # the stand-ins are rendered at the model's size
    run["model_kwargs"] = {**LOCAL_KWARGS[run["model"]], **run["model_kwargs"]}
    # warm-ups shrink with the epochs: 20 of 8 epochs would be all warm-up
    if run["engine"] not in NO_EPOCHS:
        epochs = max(local.min_epochs, round(run["epochs"] * local.epochs_factor))
        ratio = epochs / run["epochs"]
        run["protocol"]["warmup_epochs"] = round(run["protocol"]["warmup_epochs"] * ratio)
        run["protocol"]["cooldown_epochs"] = round(run["protocol"]["cooldown_epochs"] * ratio)
        run["loss"]["warmup_epochs"] = round(run["loss"]["warmup_epochs"] * ratio)
        run["epochs"] = epochs
    else:
        ratio = 1.0
    # the protocol's base learning rate, not scaled down to the local batch (5e-4 x 64/512 barely moves)
    run["protocol"].update(batch_size=local.batch_size, repeated_aug=local.repeated_aug, lr_batch_ref=None)
    if not local.strong_augment:
        run["protocol"].update(auto_augment=None, mixup=0.0, cutmix=0.0)
    run["resources"].update(nodes=1, gpus_per_node=0, cpus_per_task=local.cpus, mem_gb=local.mem_gb)
    _ssl_to_local(run["protocol"], local, ratio, shrink)
    _segmentation_to_local(run["protocol"], local)


def _segmentation_to_local(protocol: dict[str, Any], local: DictConfig) -> None:
    """Iterations (and their intervals) times `local.iterations_factor`; the crop becomes the synthetic
    image and the resize scales shrink with it, so the scale jitter keeps its meaning; the neck and head
    narrow with the local backbone."""
    seg = protocol["segmentation"]
    if seg is None:
        return
    shrink = local.synthetic.image_size / seg["crop_size"]
    seg.update({key: max(1, round(seg[key] * local.iterations_factor)) for key in ITERATION_COUNTS})
    seg.update({key: max(1, round(seg[key] * local.fpn_width_factor)) for key in FPN_WIDTHS})
    seg.update(
        crop_size=local.synthetic.image_size,
        img_scale=[max(1, round(side * shrink)) for side in seg["img_scale"]],
    )


def _ssl_to_local(protocol: dict[str, Any], local: DictConfig, ratio: float, shrink: float) -> None:
    """Self-supervised pre-training sized for a CPU: small crops and heads from `local`, the teacher
    temperature's warm-up shrunk with the epochs, the blur radii with the image (`local.scale_blur`)."""
    for method in ("dino", "mocov3"):
        if protocol[method] is not None and local.scale_blur:
            protocol[method]["blur_radius"] = [r * shrink for r in protocol[method]["blur_radius"]]
    if protocol["dino"] is not None:
        dino = protocol["dino"]
        dino.update(
            local_crop_size=local.local_crop_size,
            local_crops_number=local.local_crops_number,
            out_dim=local.head_out_dim,
            hidden_dim=local.head_hidden_dim,
            warmup_teacher_temp_epochs=round(dino["warmup_teacher_temp_epochs"] * ratio),
        )
    if protocol["mocov3"] is not None:
        protocol["mocov3"]["mlp_dim"] = local.head_hidden_dim


def datasets_of(config: DictConfig) -> list[tuple[str, str | None, str]]:
    """(dataset, root, the key that sets the root) of every dataset a run reads: an evaluate run reads its
    metrics' evaluation sets (their roots in `eval.roots`) and not its upstream's training set."""
    if config.engine != "evaluate" or config.data.dataset == "synthetic":
        return [(config.data.dataset, config.data.root, "data.root")]
    names = dict.fromkeys(EVALUATIONS[metric] for metric in config.eval.metrics)
    return [(name, config.eval.roots.get(name), f"+eval.roots.{name}") for name in names]


def identity(config: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a run config that decides what it computes (the fields marked `computed`)."""
    data = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    return identity_of(Run, data)


def run_uid(config: DictConfig | dict[str, Any]) -> str:
    return _uid_of(identity(config))


def _uid_of(identity_data: dict[str, Any]) -> str:
    canonical = json.dumps(identity_data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _recipe_source(path: Path, overrides: list[str], key: str) -> str:
    """Where a recipe-level value came from: the last override that set its key, else the file."""
    texts = [text for text in overrides if _overlap(text.lstrip("+~").split("=")[0], key)]
    return f"override {texts[-1]!r} ({path})" if texts else str(path)


def _overlap(set_key: str, key: str) -> bool:
    return set_key == key or key.startswith(set_key + ".") or set_key.startswith(key + ".")


def _check_recipe(recipe: DictConfig, path: Path, overrides: list[str]) -> None:
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
    for name in recipe.metrics:
        if name not in METRICS:
            raise RecipeError(f"{path}: key 'metrics': unknown metric {name!r}; known: {', '.join(METRICS)}")
    for row in recipe.rows:
        _check_engine(recipe, row, path)
    groups = {row.group for row in recipe.rows}
    if recipe.lambda_sweep is not None and recipe.lambda_sweep not in groups:
        raise RecipeError(f"{path}: key 'lambda_sweep': no row has group {recipe.lambda_sweep!r}")


def _check_engine(recipe: DictConfig, row: DictConfig, path: Path) -> None:
    """A finetune or evaluate row names the run it consumes; a supervised row trains from scratch."""
    engine, upstream, source = row.engine or recipe.engine, row["from"], f"{path}: row '{row.id}'"
    if engine not in ENGINES:
        raise RecipeError(f"{source}: key 'engine': got {engine!r}, expected {' | '.join(ENGINES)}")
    if engine in FROM_SCRATCH and upstream is not None:
        raise RecipeError(
            f"{source}: key 'from': a {engine} row trains from scratch; set engine: finetune to start "
            "from another run, engine: evaluate to measure it, or engine: linear_probe to probe it"
        )
    if engine not in FROM_SCRATCH and upstream is None:
        raise RecipeError(
            f"{source}: key 'from': an {engine} row needs the run it consumes, e.g. "
            "from: {recipe: table2, row: vit-s, checkpoint: final}"
        )
    if upstream is not None and upstream.checkpoint not in CHECKPOINTS:
        raise RecipeError(
            f"{source}: key 'from.checkpoint': got {upstream.checkpoint!r}, expected "
            + " | ".join(CHECKPOINTS)
        )
    if engine == "evaluate":
        if not recipe.eval.metrics:
            raise RecipeError(f"{path}: key 'eval.metrics': an evaluate row needs at least one metric")
        for name in recipe.eval.metrics:
            if name not in EVALUATIONS:
                raise RecipeError(
                    f"{path}: key 'eval.metrics': {name!r} is not measured by an evaluate run; known: "
                    + ", ".join(EVALUATIONS)
                )


def _upstream_recipe(path: Path, name: str, source: str) -> Path:
    """`from.recipe` as a file: a path (a relative one from this recipe's folder), else a recipe name beside
    this recipe, else in recipes/."""
    candidates = [path.parent / name, path.parent / f"{name}.yaml", RECIPES_DIR / f"{name}.yaml"]
    found = next((c for c in candidates if c.suffix == ".yaml" and c.is_file()), None)
    if found is None:
        known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise RecipeError(f"{source}: key 'from.recipe': no recipe {name!r}; known: {known}")
    return found.resolve()


def _at(data: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in a plain nested dict."""
    for part in key.split("."):
        data = data[part]
    return data


def _link_upstream(run: dict[str, Any], upstream: ResolvedRun, source: str, blame: "_Blame") -> None:
    """What the downstream row takes from, and must share with, the run it consumes."""
    up = upstream.config
    if up.engine not in TRAINING_ENGINES:
        raise RecipeError(
            f"{source}: key 'from': row '{up.row}' of {up.recipe_file} trains nothing ({up.engine})"
        )
    if run["engine"] == "linear_probe" and up.engine not in PRETRAINING_ENGINES:
        raise RecipeError(
            f"{source}: key 'from': a linear probe reads a self-supervised backbone "
            f"({', '.join(PRETRAINING_ENGINES)}); row '{up.row}' of {up.recipe_file} is a {up.engine} run"
        )
    if up.engine in PRETRAINING_ENGINES and run["upstream"]["checkpoint"] != "final":
        raise RecipeError(
            f"{source}: key 'from.checkpoint': a {up.engine} run validates nothing, so it has no best "
            "epoch: expected final"
        )
    same = ["model", "model_kwargs", "last_block"]  # D.3: fine-tuning keeps the pre-training architecture
    if run["engine"] == "evaluate":
        same.append("data.dataset")  # the classifier's classes are the ones it was trained on
    upstream_run = OmegaConf.to_container(up)
    for key in same:
        mine, theirs = _at(run, key), _at(upstream_run, key)
        if hashable(mine) != hashable(theirs):  # a tuple of the local kwargs reads back as a list
            raise RecipeError(
                f"{blame(key)}: key '{key}': got {shown(mine)}, but the run it consumes (row '{up.row}' of "
                f"{up.recipe_file}) has {shown(theirs)}: a {run['engine']} run keeps the upstream's"
            )
    if run["engine"] == "evaluate":
        run["data"]["synthetic"] = OmegaConf.to_container(up.data.synthetic)
    run["upstream"].update(uid=upstream.uid, folder=str(upstream.folder), engine=up.engine)


def _upstream_runs(
    path: Path,
    recipe: DictConfig,
    row: DictConfig,
    seeds: list[int],
    run: dict[str, Any],
    chain: tuple,
    loaded: dict[tuple, list[ResolvedRun]],
) -> dict[int, ResolvedRun]:
    """The runs of the upstream row, one per seed of the downstream row, at the same scale, in the same
    run store and with the same launcher. `loaded` keeps each upstream recipe resolved once per
    `load_recipe` (Tab. 4's 16 rows share Tab. 2's)."""
    source = f"{path}: row '{row.id}'"
    upstream_path = _upstream_recipe(path, row["from"].recipe, source)
    if upstream_path in chain:
        raise RecipeError(f"{source}: key 'from': a cycle of recipes: {' -> '.join(map(str, chain))}")
    key = (upstream_path, recipe.scale, tuple(seeds), run["runs_root"])
    if key not in loaded:
        seed_list = ",".join(str(s) for s in seeds)
        _, loaded[key] = load_recipe(
            upstream_path,
            [f"scale={recipe.scale}", f"seeds=[{seed_list}]", f"runs_root='{run['runs_root']}'"],
            _chain=(*chain, upstream_path),
        )
    runs = loaded[key]
    found = {r.seed: r for r in runs if row["from"].row in r.rows}
    if not found:
        known = sorted({row_id for r in runs for row_id in r.rows})
        raise RecipeError(
            f"{source}: key 'from.row': {upstream_path} has no row {row['from'].row!r}; known: "
            + ", ".join(known)
        )
    for upstream in found.values():  # launched with the downstream's launcher, in the same store
        upstream.row_config.launcher = run["launcher"]
        upstream.__dict__.pop("config", None)
    return found


def load_recipe(
    path: str | Path, overrides: list[str] | None = None, multirun: bool = False, _chain: tuple = ()
) -> tuple[DictConfig, list[ResolvedRun]]:
    """Validate a recipe with its overrides and expand it into runs (rows x seeds x sweep points);
    identical runs merge by uid. A row with `from:` gets the upstream run of its seed (`.upstream`), whose
    uid is part of its own."""
    path = Path(path)
    _chain = _chain or (path.resolve(),)
    loaded: dict[tuple, list[ResolvedRun]] = {}
    parsed = parse(list(overrides or []), multirun)
    recipe, protocols = compose_recipe(path, parsed.recipe, parsed.protocols)
    if recipe.seeds is None:
        recipe.seeds = list(recipe.local.seeds) if recipe.scale == "local" else [0]
    _check_recipe(recipe, path, parsed.recipe)
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
            if not run["loss"]["sar"]:  # an unused lambda must not make two identical runs look different
                run["loss"].update(weight=0.0, schedule="constant", warmup_epochs=0)
            if not run["loss"]["drloc_weight"]:
                run["loss"]["drloc_pairs"] = Loss.drloc_pairs
            if not run["loss"]["sar"] or run["engine"] != "dino":  # only DINO has crops of two sizes
                run["loss"]["crops"] = Loss.crops
            _check_values(run, blame)
            _anchor_folders(run)
            if recipe.scale == "local":
                _to_local(run, recipe.local)
                blame = _Blame(path, row.id, point, " at local scale")
                _check_values(run, blame)  # what local scaling made of the run
            _check_model(run, blame)
            seeds = [run["seed"]] if any(s.key == "seed" for s in point) else list(recipe.seeds)
            upstreams: dict[int, ResolvedRun | None] = dict.fromkeys(seeds)
            if run["upstream"] is not None:
                upstreams.update(_upstream_runs(path, recipe, row, seeds, run, _chain, loaded))
                _link_upstream(
                    run, upstreams[run["seed"]] or upstreams[seeds[0]], f"{path}: row '{row.id}'", blame
                )
            resolved = OmegaConf.create(run)
            row_identity = identity(run)
            for seed in seeds:
                upstream = upstreams[seed]
                linked = {"upstream": {**row_identity["upstream"], "uid": upstream.uid}} if upstream else {}
                uid = _uid_of({**row_identity, "seed": seed, **linked})
                found = runs.setdefault(uid, ResolvedRun(uid, resolved, seed, upstream=upstream))
                found.rows = list(dict.fromkeys([*found.rows, row.id]))
                found.sweeps = list(dict.fromkeys([*found.sweeps, sweep] if sweep else found.sweeps))
    return recipe, list(runs.values())
