"""Identity is declared on the schema: every field of a run says whether it is part of what the run
computes, and the uid follows exactly those fields."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from harness.config.errors import field_at
from harness.config.schema import IDENTITY, Run, field_types, schema_of
from harness.recipe import identity, load_recipe, run_uid
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


def _fields(schema: type, prefix: str = "", inside_incidental: bool = False):
    """(dotted name, field, inside an incidental section) for every field reachable from `schema`."""
    for f in dataclasses.fields(schema):
        yield f"{prefix}{f.name}", f, inside_incidental
        nested = schema_of(field_types(schema)[f.name])
        if nested is not None:
            yield from _fields(
                nested, f"{prefix}{f.name}.", inside_incidental or not f.metadata.get(IDENTITY, True)
            )


def test_every_field_of_every_run_schema_is_classified():
    fields = list(_fields(Run))
    assert len(fields) > 60
    unclassified = [name for name, f, _ in fields if not isinstance(f.metadata.get(IDENTITY), bool)]
    assert not unclassified, f"fields without computed()/incidental(): {unclassified}"
    contradictions = [name for name, f, inside in fields if inside and f.metadata[IDENTITY]]
    assert not contradictions, f"computed fields inside incidental sections: {contradictions}"


def test_what_the_issue_names_is_not_identity():
    marks = {name: f.metadata[IDENTITY] for name, f, inside in _fields(Run) if not inside}
    for name in (
        "protocol.description",
        "protocol.name",
        "paper",
        "label",
        "row",
        "table",
        "launcher",
        "resources",
        "train.heartbeat_every_s",
        "train.progress",
        "train.max_nonfinite_steps",
        "data.root",
        "runs_root",
        "recipe_file",
    ):
        assert marks[name] is False, name
    for name in (
        "model",
        "model_kwargs",
        "last_block",
        "loss",
        "epochs",
        "seed",
        "protocol.lr",
        "data.dataset",
    ):
        assert marks[name] is True, name


@pytest.fixture
def config(tmp_path):
    _, runs = load_recipe(write_tiny(tmp_path, tmp_path / "runs"), TINY_OVERRIDES)
    return runs[0].config


def _leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _changed(value, key=""):
    nested = schema_of(field_at(Run, key)) if key else None
    if value is None and nested is not None:  # an optional section (upstream): set every field of it
        return {f.name: _changed(f.default) for f in dataclasses.fields(nested)}
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, 1]
    if value is None:
        return 7
    return {"changed": 1}


def test_uid_follows_exactly_the_computed_fields(config):
    base = run_uid(config)
    leaves = list(_leaves(identity(config)))
    assert len(leaves) > 40
    for key, value in leaves:
        changed = config.copy()
        OmegaConf.update(changed, key, _changed(value, key), force_add=True)
        assert run_uid(changed) != base, f"changing {key} does not change the uid"
    identity_keys = {key for key, _ in leaves}
    others = [(k, v) for k, v in _leaves(OmegaConf.to_container(config)) if k not in identity_keys]
    assert {k for k, _ in others} >= {"protocol.description", "train.max_nonfinite_steps", "data.root"}
    for key, value in others:  # where a run is launched, stored or shown does not change what it computes
        changed = config.copy()
        OmegaConf.update(changed, key, _changed(value) if not isinstance(value, dict) else {1: 2.0})
        assert run_uid(changed) == base, key


def test_overriding_an_incidental_field_keeps_every_uid(tmp_path):
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    _, runs = load_recipe(recipe, TINY_OVERRIDES)
    incidental = [
        "protocol.description='another, longer text'",
        "train.max_nonfinite_steps=3",
        "data.root=/elsewhere",
        "launcher=slurm",
        "resources.mem_gb=8",
        "paper.top1=1.0",
    ]
    _, again = load_recipe(recipe, [*TINY_OVERRIDES, *incidental])
    assert [r.uid for r in again] == [r.uid for r in runs]
    _, other = load_recipe(recipe, [*TINY_OVERRIDES, "protocol.lr=1e-3"])
    assert not {r.uid for r in other} & {r.uid for r in runs}
