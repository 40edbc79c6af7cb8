"""A run's identity, built to survive upgrades (exca's rule): the uid hashes the computed values that
differ from their schema defaults (a field without a default always counts) and IDENTITY_VERSION. Adding a
field with a default leaves every uid as it was; changing a default, or what a value means, needs a new
version, and `tests/test_config_identity.py` fails when a computed default changes without one (it keeps
the defaults of each version under `tests/golden/`).

Version 1 (before this module) hashed every computed value, defaults included, and named a run folder by
its bare uid; `stored_run` reads its `config.yaml` files for `python -m harness store migrate`. Version 2:
run folders are `<row>-s<seed>-<uid>`, and a run keeps of its protocol the fields its engine reads.
"""

import dataclasses
import enum
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf

from harness.config.fields import IDENTITY
from harness.config.protocols import ProtocolBase, pick, schemas
from harness.config.schema import Run, field_types, schema_of

IDENTITY_VERSION = 2
_NO_DEFAULT = object()
_UID = re.compile(r"-([0-9a-f]{12})$")


def engine_schemas() -> dict[str, type]:
    """Every registered engine's protocol schema (the built-in engines registered first)."""
    from harness.engines.spec import engines

    engines()
    return schemas()


def identity(config: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """What decides what a run computes: its computed fields whose values differ from their defaults."""
    data = (
        OmegaConf.to_container(config, resolve=True, enum_to_str=True)
        if OmegaConf.is_config(config)
        else config
    )
    return _differing(Run, data, engine_schemas()[data["engine"]])


def run_uid(config: DictConfig | dict[str, Any]) -> str:
    """The run's uid: 12 hex digits of the SHA-256 of its identity and IDENTITY_VERSION."""
    return uid_of(identity(config))


def uid_of(identity_data: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"version": IDENTITY_VERSION, "run": identity_data}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def folder_name(row: str, seed: int, uid: str) -> str:
    """`<row>-s<seed>-<uid>`, the row id made a plain folder name (`1a/0.01` -> `1a_0.01`)."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", row).strip("._-") or "run"
    return f"{readable}-s{seed}-{uid}"


def uid_in(name: str) -> str | None:
    """The uid a run folder's name ends with, or None for a folder that is not a run's."""
    match = _UID.search(name)
    return match.group(1) if match else None


def run_folder(table: Path, row: str, seed: int, uid: str) -> Path:
    """The run's folder in `table` (a run store's table folder): the folder whose name ends with its uid
    if there is one (a run shared by rows of several recipes is found whichever row named it), else
    `folder_name(row, seed, uid)`."""
    return table / (_named(table).get(uid) or folder_name(row, seed, uid))


def _named(table: Path) -> dict[str, str]:
    """uid -> folder name of the run folders in `table`, listed again whenever the folder changes."""
    try:
        return _listing(table, os.stat(table).st_mtime_ns)
    except OSError:
        return {}


@functools.lru_cache(maxsize=256)
def _listing(table: Path, mtime_ns: int) -> dict[str, str]:
    del mtime_ns  # the cache key: a new run folder changes the table folder's mtime
    return {uid: entry.name for entry in os.scandir(table) if entry.is_dir() and (uid := uid_in(entry.name))}


def stored_run(config: dict[str, Any]) -> DictConfig:
    """A run config written by identity version 1 (a run folder's `config.yaml`: every engine's protocol
    in one flat schema) as the run of this version for its engine: the protocol fields its engine reads,
    keys of no schema dropped, values checked against the schemas. Its `upstream.uid` is still the
    version-1 uid: the caller re-keys it."""
    schema = engine_schemas()[config["engine"]]
    data = _known(Run, config, schema)
    data["protocol"] = pick(schema, config["protocol"], config["engine"])
    return typed_run(data, schema)


def typed_run(data: dict[str, Any], schema: type) -> DictConfig:
    """`data` (a run as a dict) checked against the Run schema with `schema` as its protocol's: OmegaConf
    refuses a wrong type or a value outside an enum, naming the key. Returns it with plain values."""
    run = OmegaConf.structured(Run)
    run.protocol = OmegaConf.structured(schema)
    typed = OmegaConf.merge(run, data)
    return OmegaConf.create(OmegaConf.to_container(typed, enum_to_str=True))


def defaults() -> dict[str, Any]:
    """The default of every computed field of the run schema and of each engine's protocol schema: what
    the uids of this version leave out (`tests/golden/identity-defaults-v<N>.json`)."""
    out = {"Run": _defaults_of(Run)}
    for engine, schema in sorted(engine_schemas().items()):
        out[f"protocol:{engine}"] = _defaults_of(schema)
    return out


def _defaults_of(schema: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(schema):
        if not f.metadata[IDENTITY]:
            continue
        nested = schema_of(field_types(schema)[f.name])
        if nested is not None and issubclass(nested, ProtocolBase):
            out[f.name] = "(its engine's protocol schema)"
        elif nested is not None:
            out[f.name] = _defaults_of(nested)
        else:
            default = _default(f)
            out[f.name] = "(required)" if default is _NO_DEFAULT else _plain(default, numbers=False)
    return out


def _differing(schema: type, data: dict[str, Any], protocol: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(schema):
        if not f.metadata[IDENTITY]:
            continue
        value = data[f.name]
        nested = schema_of(field_types(schema)[f.name])
        if nested is not None and issubclass(nested, ProtocolBase):
            nested = protocol
        default = _default(f)
        if nested is not None and value is not None:
            inner = _differing(nested, value, protocol)
            if inner or default is None or default is _NO_DEFAULT:  # a present optional section counts
                out[f.name] = inner
        elif default is _NO_DEFAULT or _plain(value) != _plain(default):
            out[f.name] = value
    return out


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    if f.default is dataclasses.MISSING or f.default is MISSING:
        return _NO_DEFAULT
    return f.default


def _plain(value: Any, numbers: bool = True) -> Any:
    """A default as a run holds it: enums as their values, dataclasses as dicts; with `numbers`, 1 and
    1.0 alike (for comparing)."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return {k: _plain(v, numbers) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v, numbers) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, numbers) for v in value]
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def _known(schema: type, data: dict[str, Any], protocol: type) -> dict[str, Any]:
    """`data` without the keys `schema` does not have (at every depth; free mappings kept whole)."""
    types = field_types(schema)
    out = {}
    for key, value in data.items():
        if key not in types:
            continue
        nested = schema_of(types[key])
        if nested is not None and issubclass(nested, ProtocolBase):
            nested = protocol
        out[key] = (
            _known(nested, value, protocol) if nested is not None and isinstance(value, dict) else value
        )
    return out
