"""Recipes and protocols composed with Hydra's compose API onto the schemas in its ConfigStore.

A recipe's folder is Hydra's primary config directory and the project's `recipes/` is on the search path,
so a recipe anywhere finds the `protocol` group (a user's own `protocol/` beside the recipe adds options).
Composition writes nothing: no `outputs/`, no `.hydra/`, no log files.
"""

import dataclasses
import functools
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException, MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from yaml.nodes import MappingNode, Node, SequenceNode

from harness.config import PROTOCOL_DIR_NAME, RECIPES_DIR, RecipeError
from harness.config.errors import describe
from harness.config.protocols import SCHEMA_PREFIX, ProtocolBase, any_protocol, schemas
from harness.config.schema import Recipe
from harness.text import bounded

RECIPE_SCHEMA = "recipe_schema"
PROTOCOL_GROUP = PROTOCOL_DIR_NAME
DEFAULTS = f"defaults: [{RECIPE_SCHEMA}, {{protocol: deit}}, _self_]"
NOT_VALIDATED = (
    f"key 'defaults': the defaults list must start with {RECIPE_SCHEMA} ({DEFAULTS}), or with a recipe that "
    "does, so that the recipe is validated"
)
MAX_VALUES = 10_000  # values a recipe or protocol file may hold, its YAML aliases followed (Tab. 4: 481)
MAX_DEPTH = 32  # levels of nesting, aliases followed (the shipped recipes: 5)


@dataclasses.dataclass
class _ProtocolChoice:
    """A primary config that is one option of the `protocol` group, typed by the schema that the option's
    defaults list starts with (`schema_<engine>`)."""

    defaults: list[Any] = dataclasses.field(default_factory=lambda: ["_self_", {PROTOCOL_GROUP: MISSING}])
    protocol: Any = None


_STORE = ConfigStore.instance()
_STORE.store(name=RECIPE_SCHEMA, node=Recipe)
_STORE.store(name="_protocol_choice", node=_ProtocolChoice)


def _store_protocol_schemas() -> None:
    """Every registered engine's protocol schema as the option `schema_<engine>` of the `protocol` group
    (Hydra's structured-config group schemas), for the files' defaults lists."""
    from harness.engines.spec import engines  # (registers the built-in engines)

    engines()
    for engine, schema in schemas().items():
        _STORE.store(group=PROTOCOL_GROUP, name=f"{SCHEMA_PREFIX}{engine}", node=schema)


def protocol_names(recipe_dir: Path) -> list[str]:
    """The options of the `protocol` group seen from a recipe in `recipe_dir` (its files: the schemas are
    not options to train with)."""
    return sorted({Path(file).stem for file, _ in _protocol_files_stamp(recipe_dir)})


def compose_recipe(
    path: Path, overrides: list[str], protocols: set[str]
) -> tuple[DictConfig, dict[str, DictConfig]]:
    """The recipe at `path` with its recipe-level `overrides`, and each protocol named in `protocols` or
    by a row, each validated against its schema. Errors name the file, the key and what was expected."""
    _check_recipe_file(path)
    _store_protocol_schemas()
    search = f"hydra.searchpath=[file://{RECIPES_DIR}]"
    with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base=None):
        try:
            recipe = compose(path.stem, overrides=[*overrides, search])
            OmegaConf.to_container(recipe, resolve=True)  # an interpolation (${...}) fails here, by key
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
            if overrides and not _validated(path, search):  # the overrides failed for want of the schema
                raise RecipeError(f"{path}: {NOT_VALIDATED}") from error
            raise RecipeError(f"{path}: {_explain(error, path)}") from error
        if OmegaConf.get_type(recipe) is not Recipe:
            raise RecipeError(f"{path}: {NOT_VALIDATED}")
        _check_complete(recipe, Recipe, str(path))
        names = protocols | {row.protocol for row in recipe.rows if row.protocol}
        stamp = _protocol_files_stamp(path.parent)
        for file, _ in stamp:
            _bounded_yaml(Path(file))
        composed = {name: _compose_protocol(name, path, search, stamp) for name in sorted(names)}
    return recipe, composed


def _check_recipe_file(path: Path) -> None:
    """Before Hydra reads it: a .yaml file holding a mapping, of bounded size once its aliases are
    followed."""
    if not path.exists():
        raise RecipeError(
            f"recipe {path} does not exist (a recipe is a .yaml file, e.g. recipes/table1.yaml)"
        )
    if not path.is_file():
        raise RecipeError(f"recipe {path} is a folder, not a recipe file (e.g. recipes/table1.yaml)")
    if path.suffix != ".yaml":
        raise RecipeError(
            f"recipe {path}: a recipe is a .yaml file (Hydra reads no other): rename it "
            f"{path.with_suffix('.yaml')}"
        )
    if not isinstance(_bounded_yaml(path), MappingNode):
        raise RecipeError(f"{path}: the recipe is empty or not a mapping: it starts with {DEFAULTS}")


def _validated(path: Path, search: str) -> bool:
    """Whether the recipe composes onto the Recipe schema (through its defaults list), overrides aside."""
    try:
        return OmegaConf.get_type(compose(path.stem, overrides=[search])) is Recipe
    except (HydraException, OmegaConfBaseException, yaml.YAMLError):
        return True  # its own error is the one to show


def _bounded_yaml(path: Path) -> Node | None:
    """The file's YAML node tree (aliases shared, not expanded), refused if following its aliases would
    give more than MAX_VALUES values or MAX_DEPTH levels: an alias bomb of a kilobyte expands to millions
    of values, and composing them hangs."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot be read as UTF-8 text ({error})") from error
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {bounded(' '.join(str(error).split()), 400)}") from error
    except RecursionError as error:
        raise RecipeError(f"{path}: nested deeper than YAML can read") from error
    if root is not None:
        values, _ = _measure(root, 0, {}, path)
        if values > MAX_VALUES:
            raise RecipeError(
                f"{path}: holds {values:,} values once its YAML aliases (*name) are followed, more than "
                f"{MAX_VALUES:,}: an alias that repeats an alias (an 'alias bomb')?"
            )
    return root


def _measure(node: Node, depth: int, memo: dict[int, tuple[int, int]], path: Path) -> tuple[int, int]:
    """(values, levels) of a node with its aliases followed, once per node: aliases share nodes."""
    deep = f"{path}: nested more than {MAX_DEPTH} levels deep once its YAML aliases are followed"
    if id(node) not in memo:
        if depth > MAX_DEPTH:  # also ends a recursive alias (&a [*a])
            raise RecipeError(deep)
        children = node.value if isinstance(node, SequenceNode) else []
        if isinstance(node, MappingNode):
            children = [item for pair in node.value for item in pair]
        measured = [_measure(child, depth + 1, memo, path) for child in children]
        memo[id(node)] = (1 + sum(v for v, _ in measured), 1 + max((lv for _, lv in measured), default=0))
    values, levels = memo[id(node)]
    if depth + levels > MAX_DEPTH:
        raise RecipeError(deep)
    return values, levels


def _protocol_files_stamp(recipe_dir: Path) -> tuple:
    """What a composed protocol depends on: the group's files and their modification times."""
    folders = dict.fromkeys([recipe_dir.resolve() / PROTOCOL_GROUP, RECIPES_DIR / PROTOCOL_GROUP])
    return tuple((str(p), p.stat().st_mtime_ns) for folder in folders for p in sorted(folder.glob("*.yaml")))


@functools.lru_cache(maxsize=64)
def _compose_protocol(name: str, path: Path, search: str, stamp: tuple) -> DictConfig:
    """One option of the protocol group, composed once per process while its files are unchanged (every
    recipe of Tab. 2 needs the same four); read-only, since it is shared."""
    try:
        protocol = compose("_protocol_choice", overrides=[f"{PROTOCOL_GROUP}={name}", search]).protocol
        OmegaConf.to_container(protocol, resolve=True)
    except MissingConfigException as error:
        known = ", ".join(protocol_names(path.parent))
        raise RecipeError(f"{path}: key 'protocol': unknown protocol {name!r}; known: {known}") from error
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as error:
        raise RecipeError(
            f"protocol {name!r} ({PROTOCOL_GROUP}/{name}.yaml): {describe(error, any_protocol())}"
        ) from error
    schema = OmegaConf.get_type(protocol)
    if not (isinstance(schema, type) and issubclass(schema, ProtocolBase)):
        engines = ", ".join(f"{SCHEMA_PREFIX}{engine}" for engine in schemas())
        raise RecipeError(
            f"{PROTOCOL_GROUP}/{name}.yaml: key 'defaults': a protocol's defaults list starts with its "
            f"engine's schema ({engines}) or with a protocol that does, so that it is validated"
        )
    _check_complete(protocol, schema, f"protocol {name!r} ({PROTOCOL_GROUP}/{name}.yaml)")
    if protocol.name != name:
        raise RecipeError(f"{PROTOCOL_GROUP}/{name}.yaml: key 'name' is {protocol.name!r}, expected {name!r}")
    OmegaConf.set_readonly(protocol, True)
    return protocol


def _check_complete(config: DictConfig, schema: type, source: str) -> None:
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise RecipeError(f"{source}: missing value for key(s) {', '.join(missing)} ({schema.__name__})")


def _explain(error: BaseException, path: Path) -> str:
    """Hydra's message for composition problems (which override, which group option), else the key."""
    if isinstance(error, yaml.YAMLError):
        if "could not determine a constructor" in str(error):
            return f"a YAML tag that is not plain data (recipes are data: no !!python tags): {error}"
        return f"not valid YAML: {error}"
    if isinstance(error, MissingConfigException):
        first = str(error).strip().splitlines()[0]
        if PROTOCOL_GROUP in str(error):
            return f"key 'protocol': {first}; known: {', '.join(protocol_names(path.parent))}"
        return first
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    detail = describe(error, Recipe)
    if text.startswith("Error merging override"):
        return f"override {text.removeprefix('Error merging override').strip()!r}: {detail}"
    return detail
