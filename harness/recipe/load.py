"""Resolve a recipe: compose it, expand it into runs (rows x seeds x sweep points), each row's unset fields
taken from the recipe, its protocol narrowed to what its engine reads, the overrides applied, scaled for
`scale=local`, checked, and named by its uid (harness.config.identity). Nothing is launched or written."""

import copy
import hashlib
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import RecipeError
from harness.config.compose import compose_recipe
from harness.config.identity import identity, uid_of
from harness.config.overrides import apply, parse
from harness.config.protocols import pick
from harness.config.schema import Loss
from harness.engines.spec import Progress, spec_of
from harness.recipe.local import anchor_folders, to_local
from harness.recipe.run import ResolvedRun
from harness.recipe.upstream import link_upstream, upstream_runs
from harness.recipe.validate import Blame, check_model, check_recipe, check_values

LOSS_DEFAULTS = OmegaConf.to_container(OmegaConf.structured(Loss), enum_to_str=True)


def load_recipe(
    path: str | Path,
    overrides: list[str] | None = None,
    multirun: bool = False,
    _chain: tuple = (),
    _launcher: dict[str, Any] | None = None,
) -> tuple[DictConfig, list[ResolvedRun]]:
    """Validate a recipe with its overrides and expand it into runs (rows x seeds x sweep points);
    identical runs merge by uid. A row with `from:` gets the upstream run of its seed (`.upstream`), whose
    uid is part of its own. `_launcher`: the launcher of the downstream runs an upstream recipe is loaded
    for (its runs are launched with theirs)."""
    path = Path(path)
    _chain = _chain or (path.resolve(),)
    loaded: dict[tuple, list[ResolvedRun]] = {}
    parsed = parse(list(overrides or []), multirun)
    recipe, protocols = compose_recipe(path, parsed.recipe, parsed.protocols)
    if recipe.seeds is None:
        recipe.seeds = list(recipe.local.seeds) if recipe.scale == "local" else [0]
    check_recipe(recipe, path, parsed.recipe)
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
            run = resolve_row(recipe, row, protocol, path, sha256)
            blame = Blame(path, row.id, point)
            apply(run, point, row.id)
            run = _checked(run, blame)
            if _launcher is not None:
                run["launcher"] = copy.deepcopy(_launcher)
            if recipe.scale == "local":
                to_local(run, recipe.local)
                blame = Blame(path, row.id, point, " at local scale")
                check_values(run, blame)  # what local scaling made of the run
            check_model(run, blame)
            seeds = [run["seed"]] if any(s.key == "seed" for s in point) else list(recipe.seeds)
            upstreams: dict[int, ResolvedRun | None] = dict.fromkeys(seeds)
            if run["upstream"] is not None:
                upstreams.update(upstream_runs(path, recipe, row, seeds, run, _chain, loaded))
                link_upstream(
                    run, upstreams[run["seed"]] or upstreams[seeds[0]], f"{path}: row '{row.id}'", blame
                )
            resolved = OmegaConf.create(run)
            for seed in seeds:
                upstream = upstreams[seed]
                linked = {**run["upstream"], "uid": upstream.uid} if upstream else run["upstream"]
                uid = uid_of(identity({**run, "seed": seed, "upstream": linked}))
                found = runs.setdefault(uid, ResolvedRun(uid, resolved, seed, upstream=upstream))
                found.rows = list(dict.fromkeys([*found.rows, row.id]))
                found.sweeps = list(dict.fromkeys([*found.sweeps, sweep] if sweep else found.sweeps))
    return recipe, list(runs.values())


def resolve_row(
    recipe: DictConfig, row: DictConfig, protocol: DictConfig, path: Path, sha256: str
) -> dict[str, Any]:
    """The row as a paper-scale run (a plain dict): its unset fields from the recipe (`model_kwargs` and
    `loss` merged field by field over the recipe's), its protocol's fields that its engine reads."""
    source = f"{path}: row '{row.id}'"
    spec = spec_of(row.engine or recipe.engine, source)
    model = row.model or recipe.model
    dataset = row.dataset or recipe.dataset or recipe.data.dataset
    counts_epochs = spec.progress is Progress.epoch
    epochs = (row.epochs or recipe.epochs) if counts_epochs else 0
    for key, value in (("model", model), ("dataset", dataset), ("epochs", epochs or not counts_epochs)):
        if not value:
            raise RecipeError(f"{source}: no {key}: set it on the row or at the top of the recipe")
    upstream = row["from"]
    data = OmegaConf.to_container(recipe.data)
    data.update(dataset=dataset, fraction=row.fraction if row.fraction is not None else data["fraction"])
    try:
        picked = pick(spec.protocol, OmegaConf.to_container(protocol, enum_to_str=True), spec.name)
    except RecipeError as error:
        raise RecipeError(f"{source}: {error}") from error
    return {
        "table": recipe.store or recipe.name,
        "row": row.id,
        "label": row.label,
        "group": row.group,
        "column": row.column,
        "scale": str(recipe.scale),
        "engine": spec.name,
        "upstream": None
        if upstream is None
        else {**OmegaConf.to_container(upstream, enum_to_str=True), "uid": "", "folder": ""},
        "model": model,
        "model_kwargs": {
            **OmegaConf.to_container(recipe.model_kwargs),
            **OmegaConf.to_container(row.model_kwargs),
        },
        "last_block": row.last_block,
        "loss": row_loss(recipe, row),
        "data": data,
        "protocol": picked,
        "epochs": epochs,
        "seed": recipe.seeds[0],
        "paper": OmegaConf.to_container(row.paper),
        "paper_points": OmegaConf.to_container(row.paper_points),
        "train": OmegaConf.to_container(recipe.train),
        "eval": OmegaConf.to_container(recipe.eval),
        "resources": OmegaConf.to_container(recipe.resources),
        "launcher": OmegaConf.to_container(recipe.launcher, enum_to_str=True),
        "runs_root": recipe.runs_root,
        "recipe_file": str(path),
        "recipe_sha256": sha256,
    }


def row_loss(recipe: DictConfig, row: DictConfig) -> dict[str, Any]:
    """The loss a row trains with, before overrides: its own fields over the recipe's over the defaults."""
    return {**LOSS_DEFAULTS, **_set(recipe.loss), **_set(row.loss)}


def _set(partial: DictConfig) -> dict[str, Any]:
    """The fields a recipe's or a row's partial section sets."""
    return {k: v for k, v in OmegaConf.to_container(partial, enum_to_str=True).items() if v is not None}


def _checked(run: dict[str, Any], blame: Blame) -> dict[str, Any]:
    """The run after its overrides: its protocol narrowed again to its engine's fields (an override of a
    key that another engine reads leaves this row as it is), values of no use normalised, the values that
    their types allow checked (`check_values`; the types and enums were checked where the values came
    from: the recipe's and the protocol's composition, and each override against the schema).

    Two normalisations stay, because an override such as `loss.weight=0.05` applies to every row of a
    recipe, baselines included: a row without L_se gets one fixed lambda (weight 0, constant, no warm-up:
    unused), and a row without DRLoc the default pair count, so that a sweep of lambda over a
    table trains each baseline once. `loss.crops` is read by DINO only, and the same holds for it."""
    spec = spec_of(run["engine"])
    run["protocol"] = pick(spec.protocol, run["protocol"], spec.name)
    loss = run["loss"]
    if not loss["sar"]:
        loss.update(weight=0.0, schedule="constant", warmup_epochs=0)
    if not loss["drloc_weight"]:
        loss["drloc_pairs"] = LOSS_DEFAULTS["drloc_pairs"]
    if not loss["sar"] or "dino" not in run["protocol"]:  # only DINO has crops of two sizes
        loss["crops"] = LOSS_DEFAULTS["crops"]
    check_values(run, blame)
    anchor_folders(run)
    return run
