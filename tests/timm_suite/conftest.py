"""Runs timm's suite on the SAR models only (see README.md): timm's markers registered (the project runs
pytest with --strict-markers), the tests that name timm's own models deselected, every test of the suite
marked `slow` (each builds full-size models), and the one known departure from timm's contract marked."""

import pytest

from tests.timm_suite.sar_attached import PREFIX
from tests.timm_suite.selection import list_models

# timm's markers (its pyproject.toml); `timeout` belongs to pytest-timeout, which the project does not use
MARKERS = (
    "base",
    "cfg",
    "cfg_nonstd",
    "forward",
    "backward",
    "torchscript",
    "features",
    "fxforward",
    "fxbackward",
    "timeout",
)
HERE = "tests/timm_suite/"
# timm's contract: a model pruned to an early tap still runs forward_features (to the tap). A pyramid SAR
# model pruned before its [CLS] stage raises a ValueError instead, on purpose (it has no [CLS] token left;
# tests/test_models_intermediates.py pins the message).
PRUNED_PYRAMIDS = ("sar_pvt_small", "sar_cvt_13")
# timm's prune contract (no marker: timm leaves it out of its CI) prunes at every tap with a backward pass
# each; on the attached full-size timm models that is minutes per model on a CPU, and it tests timm's own
# pruning of its blocks, which `sar.attach` leaves as it is: run on the SAR models only
PRUNE_CONTRACT = "test_prune_intermediate_layers_contract"


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", f"{marker}: timm's own test marker ({HERE})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    selected = set(list_models())
    keep, drop = [], []
    for item in items:
        if HERE not in item.nodeid.replace("\\", "/"):
            keep.append(item)
            continue
        name = getattr(getattr(item, "callspec", None), "params", {}).get("model_name")
        if name not in selected or (item.originalname == PRUNE_CONTRACT and name.startswith(PREFIX)):
            drop.append(item)
            continue
        item.add_marker(pytest.mark.slow)
        if item.originalname == PRUNE_CONTRACT and name in PRUNED_PYRAMIDS:
            reason = "forward_features of a pyramid pruned before its [CLS] stage raises a ValueError"
            item.add_marker(pytest.mark.xfail(raises=ValueError, strict=True, reason=reason))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
