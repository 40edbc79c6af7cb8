"""How a schema field declares its identity: `computed` (two runs that differ in it are different runs) or
`incidental` (where a run is launched, stored or shown, or how it is labelled). Every field of a run's
schema says one or the other where it is declared; `tests/test_config_identity.py` walks them all."""

import dataclasses
from typing import Any

from omegaconf import MISSING

IDENTITY = "identity"


def computed(default: Any = MISSING, *, factory: Any = None) -> Any:
    """A field that decides what a run computes: two runs that differ in it are different runs."""
    return _field(True, default, factory)


def incidental(default: Any = MISSING, *, factory: Any = None) -> Any:
    """A field that changes where a run is launched, stored or shown, or how it is labelled: not its uid."""
    return _field(False, default, factory)


def _field(identity: bool, default: Any, factory: Any) -> Any:
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={IDENTITY: identity})
    return dataclasses.field(default=default, metadata={IDENTITY: identity})
