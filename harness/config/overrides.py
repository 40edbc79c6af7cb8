"""Hydra's override grammar for recipes: parsed with Hydra's own parser, then split by where each applies.

- Recipe keys (`scale`, `seeds`, `store`, `local.*`, ...) go to Hydra's composition of the recipe.
- `protocol=NAME` selects an option of the `protocol` group for every row.
- Every other key is a key of the resolved run (`epochs`, `loss.weight`, `model_kwargs.depth`, ...) and is
  applied to each row before local scaling, with Hydra's meaning of `key=`, `+key=`, `++key=` and `~key`.
- With `-m`, sweeps (`a=1,2`, `range(...)`, `choice(...)`) expand into the product of their values.
"""

import dataclasses
import functools
import itertools
import json
from enum import Enum
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import RecipeError
from harness.config.errors import describe, suggest
from harness.config.identity import engine_schemas
from harness.config.protocols import any_protocol
from harness.config.schema import Recipe, Run, field_types, is_mapping, schema_of

GRAMMAR = (
    "key=value, +key=value, ++key=value, ~key, key=null, key=[a,b], key='quoted,string'; with -m: key=a,b"
)
RECIPE_KEYS = (set(field_types(Recipe)) - set(field_types(Run)) - {"protocol"}) | {"scale"}
KINDS = {
    OverrideType.CHANGE: "set",
    OverrideType.ADD: "add",
    OverrideType.FORCE_ADD: "force",
    OverrideType.DEL: "delete",
}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One concrete run-level override: `kind` is set | add | force | delete | select (a protocol)."""

    key: str
    kind: str
    value: Any
    text: str  # as the user wrote it (for a sweep: one of its values), for error messages
    in_schema: bool  # a field of the Run schema (else a key inside model_kwargs or paper.points)


@dataclasses.dataclass
class Overrides:
    recipe: list[str]  # Hydra overrides of the recipe's own keys
    points: list[tuple[Setting, ...]]  # run-level settings of each sweep point (one point without -m)
    swept: list[str]  # the keys a sweep varies

    @property
    def protocols(self) -> set[str]:
        return {s.value for point in self.points for s in point if s.kind == "select"}


@functools.cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _run_template() -> DictConfig:
    """A Run to type override values against, its protocol any registered engine's, its optional sections
    present at every depth (upstream, protocol.segmentation, ...)."""
    return _template(any_protocol())


@functools.cache
def _template(protocol: type) -> DictConfig:
    template = OmegaConf.structured(Run)
    template.protocol = OmegaConf.structured(protocol)
    _fill_sections(template, Run)
    return template


def _fill_sections(node: DictConfig, schema: type) -> None:
    for name, annotation in field_types(schema).items():
        nested = schema_of(annotation)
        if nested is None:
            continue
        if node[name] is None:
            node[name] = OmegaConf.structured(nested)
        _fill_sections(node[name], nested)


def parse(texts: list[str], multirun: bool) -> Overrides:
    """Parse and check every override against the schemas; nothing is composed yet."""
    engine_schemas()  # the protocol keys an override may name are the registered engines'
    recipe: list[str] = []
    fixed: list[Setting] = []
    sweeps: list[list[Setting]] = []
    swept: list[str] = []
    for text in texts:
        override = _parse_one(text)
        key = override.key_or_group
        if key == "launcher" and isinstance(override.value(), str):  # launcher=slurm: the launcher's name
            key = "launcher.name"
        head = key.split(".")[0]
        if override.is_sweep_override() and not multirun:
            raise RecipeError(
                f"override {text!r}: ambiguous value: to sweep over it add -m (--multirun); for a list write "
                f"{key}=[...]; for a string with commas quote it: {key}='a,b'"
            )
        if head in RECIPE_KEYS:
            if override.is_sweep_override():
                hint = "; seeds=[0,1,2] already runs every seed" if head == "seeds" else ""
                raise RecipeError(
                    f"override {text!r}: '{head}' is a key of the recipe, not of its runs, and cannot be "
                    f"swept (run the command once per value{hint})"
                )
            recipe.append(text)
            continue
        values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        settings = [s for value in values for s in _settings(override, key, value, text)]
        if override.is_sweep_override():
            sweeps.append(settings)
            swept.append(key)
        else:
            fixed.extend(settings)
    points = [(*fixed, *combination) for combination in itertools.product(*sweeps)]
    return Overrides(recipe=recipe, points=points, swept=swept)


def _parse_one(text: str) -> Override:
    try:
        override = _parser().parse_overrides([text])[0]
    except HydraException as error:
        raise RecipeError(
            f"override {text!r}: {str(error).strip().splitlines()[0]}; expected {GRAMMAR}"
        ) from error
    if override.package is not None:
        raise RecipeError(f"override {text!r}: packages (@) are not used by recipes; expected {GRAMMAR}")
    if override.key_or_group.split(".")[0] == "hydra":
        raise RecipeError(
            f"override {text!r}: hydra.* keys are not settings of the harness (it runs no Hydra app)"
        )
    if override.value_type is not None and override.value_type.name == "GLOB_CHOICE_SWEEP":
        raise RecipeError(f"override {text!r}: glob() sweeps are not supported; list the values: key=a,b")
    return override


def _settings(override: Override, key: str, value: Any, text: str) -> list[Setting]:
    kind = KINDS[override.type]
    shown = _text(override, key, value)
    if key == "protocol":
        if kind != "set" or not isinstance(value, str):
            raise RecipeError(f"override {text!r}: expected protocol=NAME, an option of the protocol group")
        return [Setting("protocol", "select", value, shown, False)]
    return _settings_of(key, value, kind, shown, merged=False)


def _settings_of(key: str, value: Any, kind: str, text: str, merged: bool) -> list[Setting]:
    """Settings for `key`; a mapping given to set merges into the node, one setting per leaf, and the
    leaves it brings into a free mapping (model_kwargs) are added where a row lacks them."""
    in_schema = _check_key(key, text)
    if isinstance(value, dict) and value and kind in ("set", "force"):
        return [
            s for name, item in value.items() for s in _settings_of(f"{key}.{name}", item, kind, text, True)
        ]
    if merged and not in_schema:
        kind = "force"
    return [Setting(key, kind, _typed(key, kind, value, text), text, in_schema)]


def _text(override: Override, key: str, value: Any) -> str:
    """The override as written, or for one value of a sweep `key=value`."""
    if not override.is_sweep_override():
        return override.input_line or key
    prefix = {OverrideType.ADD: "+", OverrideType.FORCE_ADD: "++"}.get(override.type, "")
    return f"{prefix}{key}={value if isinstance(value, str) else json.dumps(value)}"


def _check_key(key: str, text: str) -> bool:
    """True for a field of the Run schema, False for a key inside one of its free mappings; refuses the
    rest with the close matches."""
    schema: type | None = Run
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = field_types(schema)
        if part not in fields:
            where = ".".join(parts[:depth])
            choices = sorted(fields) if where else sorted(set(fields) | RECIPE_KEYS | {"protocol"})
            owner = f"'{where}'" if where else "a run or a recipe"
            raise RecipeError(
                f"override {text!r}: unknown key '{key}' (not a key of {owner}){suggest(part, choices)}"
            )
        annotation = fields[part]
        if is_mapping(annotation):
            return depth == len(parts) - 1
        schema = schema_of(annotation)
        if schema is None and depth < len(parts) - 1:
            raise RecipeError(
                f"override {text!r}: '{'.'.join(parts[: depth + 1])}' is a value, not a mapping"
            )
    return True


def _typed(key: str, kind: str, value: Any, text: str) -> Any:
    """The value converted to the schema's type (so `lr=1` and `lr=1.0` are one run), or refused by name."""
    if kind == "delete":
        return value
    template = _run_template().copy()
    try:
        OmegaConf.update(template, key, value, merge=True, force_add=True)
        typed = OmegaConf.select(template, key)
    except OmegaConfBaseException as error:
        raise RecipeError(f"override {text!r}: {describe(error, Run)}") from error
    if OmegaConf.is_config(typed):
        return OmegaConf.to_container(typed, enum_to_str=True)
    return typed.value if isinstance(typed, Enum) else typed  # a run holds plain values


def apply(run: dict[str, Any], settings: tuple[Setting, ...], row: str) -> None:
    """Apply run-level settings to one row's resolved run, as Hydra applies overrides to a config."""
    for s in settings:
        if s.kind == "select":
            continue
        *path, leaf = s.key.split(".")
        parent = run
        for part in path:
            if part in parent and parent[part] is None:  # an optional section this row does not have
                raise RecipeError(f"override {s.text!r}: row '{row}' has no '{part}' whose key to set")
            if not isinstance(parent.get(part), dict):
                parent[part] = {}
            parent = parent[part]
        present = leaf in parent
        if s.kind == "set" and not s.in_schema and not present:
            raise RecipeError(
                f"override {s.text!r}: row '{row}' has no key '{s.key}' to change; add it with +{s.text}"
            )
        if s.kind == "add" and (s.in_schema or present):
            raise RecipeError(
                f"override {s.text!r}: key '{s.key}' is already set in row '{row}'; change it with "
                f"{s.text.lstrip('+')} or set it whether present or not with +{s.text}"
            )
        if s.kind == "delete":
            if s.in_schema:
                raise RecipeError(
                    f"override {s.text!r}: '{s.key}' is a field of every run and cannot be removed; "
                    "set it instead"
                )
            if not present or (s.value is not None and parent[leaf] != s.value):
                raise RecipeError(f"override {s.text!r}: row '{row}' has no key '{s.key}' with that value")
            del parent[leaf]
        else:
            parent[leaf] = s.value
