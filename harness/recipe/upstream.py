"""Runs that consume runs: the upstream recipe of a row's `from:`, its runs (one per seed, at the same
scale, in the same store, with the same launcher), and what the downstream run takes from, and must share
with, the run it consumes."""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import RECIPES_DIR, RecipeError, hashable, recipe_paths
from harness.engines.spec import Progress, Provides, engines, spec_of
from harness.recipe.run import ResolvedRun
from harness.recipe.validate import Blame
from harness.text import shown


def upstream_recipe(path: Path, name: str, source: str) -> Path:
    """`from.recipe` as a file: a path (a relative one from this recipe's folder), else a recipe name beside
    this recipe, else in recipes/."""
    candidates = [path.parent / name, path.parent / f"{name}.yaml", RECIPES_DIR / f"{name}.yaml"]
    found = next((c for c in candidates if c.suffix == ".yaml" and c.is_file()), None)
    if found is None:
        known = ", ".join(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in recipe_paths())
        raise RecipeError(f"{source}: key 'from.recipe': no recipe {name!r}; known: {known}")
    return found.resolve()


def _at(data: dict[str, Any], key: str) -> Any:
    """The value of dotted `key` in a plain nested dict."""
    for part in key.split("."):
        data = data[part]
    return data


def link_upstream(run: dict[str, Any], upstream: ResolvedRun, source: str, blame: Blame) -> None:
    """Check the downstream run against the run it consumes, and record that run in its `upstream`."""
    up, spec = upstream.config, spec_of(run["engine"])
    provides = spec_of(up.engine).provides
    if provides is Provides.nothing:
        raise RecipeError(
            f"{source}: key 'from': row '{up.row}' of {up.recipe_file} has no model to consume ({up.engine})"
        )
    if provides not in spec.accepts:
        givers = ", ".join(name for name, s in engines().items() if s.provides in spec.accepts)
        raise RecipeError(
            f"{source}: key 'from': a {spec.name} run reads a {' or '.join(p.value for p in spec.accepts)} "
            f"({givers}); row '{up.row}' of {up.recipe_file} is a {up.engine} run"
        )
    if provides is Provides.backbone and run["upstream"]["checkpoint"] != "final":
        raise RecipeError(
            f"{source}: key 'from.checkpoint': a {up.engine} run validates nothing, so it has no best "
            "epoch: expected final"
        )
    same = ["model", "model_kwargs", "last_block"]  # D.3: fine-tuning keeps the pre-training architecture
    if spec.progress is Progress.none:
        same.append("data.dataset")  # an evaluated classifier's classes are the ones it was trained on
    upstream_run = OmegaConf.to_container(up)
    for key in same:
        mine, theirs = _at(run, key), _at(upstream_run, key)
        if hashable(mine) != hashable(theirs):  # a tuple of the local kwargs reads back as a list
            raise RecipeError(
                f"{blame(key)}: key '{key}': got {shown(mine)}, but the run it consumes (row '{up.row}' of "
                f"{up.recipe_file}) has {shown(theirs)}: a {run['engine']} run keeps the upstream's"
            )
    if spec.progress is Progress.none:
        run["data"]["synthetic"] = OmegaConf.to_container(up.data.synthetic)
    run["upstream"].update(uid=upstream.uid, folder=str(upstream.folder), engine=up.engine)


def upstream_runs(
    path: Path,
    recipe: DictConfig,
    row: DictConfig,
    seeds: list[int],
    run: dict[str, Any],
    chain: tuple,
    loaded: dict[tuple, list[ResolvedRun]],
) -> dict[int, ResolvedRun]:
    """The runs of the upstream row, one per seed of the downstream row, at the same scale, in the same
    run store and launched with the same launcher. `loaded` keeps each upstream recipe resolved once per
    `load_recipe` (Tab. 4's 16 rows share Tab. 2's)."""
    from harness.recipe.load import load_recipe

    source = f"{path}: row '{row.id}'"
    upstream_path = upstream_recipe(path, row["from"].recipe, source)
    if upstream_path in chain:
        raise RecipeError(f"{source}: key 'from': a cycle of recipes: {' -> '.join(map(str, chain))}")
    key = (upstream_path, recipe.scale, tuple(seeds), run["runs_root"], hashable(run["launcher"]))
    if key not in loaded:
        seed_list = ",".join(str(s) for s in seeds)
        _, loaded[key] = load_recipe(
            upstream_path,
            [f"scale={recipe.scale}", f"seeds=[{seed_list}]", f"runs_root='{run['runs_root']}'"],
            _chain=(*chain, upstream_path),
            _launcher=run["launcher"],
        )
    runs = loaded[key]
    found = {r.seed: r for r in runs if row["from"].row in r.rows}
    if not found:
        known = sorted({row_id for r in runs for row_id in r.rows})
        raise RecipeError(
            f"{source}: key 'from.row': {upstream_path} has no row {row['from'].row!r}; known: "
            + ", ".join(known)
        )
    return found
