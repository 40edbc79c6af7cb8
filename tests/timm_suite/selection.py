"""Which models the vendored timm suite runs on: the SAR models registered by `sar.models`, and timm models
made by `sar.attach` (`sar_attach_<timm name>`, registered by `tests.timm_suite.sar_attached`).

timm's suite parametrizes its tests with `timm.list_models(...)`; the vendored copy imports `list_models`
from here instead, which answers the same query restricted to these models.
"""

import fnmatch
from typing import Any

import timm

import sar.models  # noqa: F401  (registers the sar_* entry points with timm)
import tests.timm_suite.sar_attached  # noqa: F401  (registers the sar_attach_* entry points)

SAR_FILTERS = ("sar_*",)  # both kinds: sar_<model> and sar_attach_<timm name>


def list_models(*args: Any, **kwargs: Any) -> list[str]:
    """`timm.list_models(*args, **kwargs)`, only the models of `SAR_FILTERS`."""
    return [m for m in timm.list_models(*args, **kwargs) if any(fnmatch.fnmatch(m, f) for f in SAR_FILTERS)]
