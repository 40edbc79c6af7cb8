"""Turn OmegaConf's and Hydra's exceptions into messages a person can act on: the key, what was given,
what was expected (from the schema), and the close matches of a mistyped key."""

import dataclasses
import difflib
import re
from typing import Any

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

from harness.config.protocols import any_protocol, schemas
from harness.config.schema import SCHEMAS, describe_type, field_types, schema_of


def suggest(word: str, choices: list[str]) -> str:
    """' (did you mean epochs?)' for a close match, else the choices."""
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return f"; did you mean {' or '.join(close)}?"
    return f"; expected one of: {', '.join(sorted(choices))}" if choices else ""


def field_at(schema: type, key: str) -> Any:
    """The annotation of dotted `key` in `schema` (list indices skipped), or None if it has none."""
    annotation: Any = schema
    for part in re.split(r"[.\[\]]+", key):
        if not part or part.isdigit():
            if annotation is not None and getattr(annotation, "__origin__", None) is list:
                annotation = annotation.__args__[0]
            continue
        if getattr(annotation, "__origin__", None) is dict:  # a free-form mapping: any key, typed values
            annotation = annotation.__args__[1]
            continue
        nested = schema_of(annotation)
        if nested is None:
            return None
        annotation = field_types(nested).get(part)
    return annotation


def _omegaconf_error(error: BaseException) -> BaseException:
    """OmegaConf's formatted error in the chain (Hydra re-raises it inside its handler), else `error`."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, OmegaConfBaseException):
            return current
        current = current.__cause__ or current.__context__
    return error


def _schema_named(name: str) -> type | None:
    """The schema class of that name: a harness schema, or a registered engine's protocol."""
    known = {**SCHEMAS, **{s.__name__: s for s in schemas().values()}, "AnyProtocol": any_protocol()}
    return known.get(name)


def describe(error: BaseException, schema: type) -> str:
    """One line: the offending key and what was expected there, for an error raised while `schema` (or an
    instance nested in it) was composed or merged."""
    inner = _omegaconf_error(error)
    if not isinstance(inner, OmegaConfBaseException):
        return str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    key = str(getattr(inner, "full_key", "") or "")
    message = str(inner).split("\n")[0]
    if match := re.search(r"Key '([^']+)' not in '(\w+)'", message):
        unknown, owner = match.groups()
        schema = _schema_named(owner)
        choices = list(field_types(schema)) if schema is not None else []
        return f"unknown key '{key or unknown}' (not a key of {owner}){suggest(unknown, choices)}"
    if isinstance(inner, MissingMandatoryValue):
        return f"key '{key}': missing value"
    if isinstance(inner, ValidationError):
        owner, leaf = getattr(inner, "object_type", None), getattr(inner, "key", None)
        mapping = getattr(inner, "ref_type", None)
        if dataclasses.is_dataclass(owner) and isinstance(leaf, str) and leaf in field_types(owner):
            annotation = field_types(owner)[leaf]
        elif owner is dict and getattr(mapping, "__origin__", None) is dict:  # a value of a typed mapping
            annotation = mapping.__args__[1]
        else:
            annotation = field_at(schema, key)
        expected = describe_type(annotation) if annotation is not None else "another type"
        got = re.search(r"[Vv]alue '(.*?)'(,| of type| could not)", message)
        given = f"got {got.group(1)!r}, " if got else ""
        return f"key '{key}': {given}expected {expected}"
    return f"key '{key}': {message}" if key else message
