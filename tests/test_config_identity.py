"""Identity is declared on the schema: every field of a run says whether it is part of what the run
computes, and the uid follows exactly those fields, of the values that differ from their defaults, with the
identity version; a default that changes without a new version fails here; folders are readable; a run
stored by version 1 reads as this version's run."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from harness.config import identity as ids
from harness.config.errors import field_at
from harness.config.identity import IDENTITY_VERSION, folder_name, identity, run_uid, stored_run
from harness.config.schema import IDENTITY, Loss, Run, field_types, schema_of
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

GOLDEN = Path(__file__).parent / "golden"
STORE_V1 = Path(__file__).parent / "fixtures" / "store_v1"


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


def _computed_leaves(schema: type, data: dict, protocol: type, prefix: str = ""):
    """(dotted key, value) of every computed leaf of a run, its protocol read with its engine's schema."""
    for f in dataclasses.fields(schema):
        if not f.metadata[IDENTITY]:
            continue
        nested = schema_of(field_types(schema)[f.name])
        nested = protocol if f.name == "protocol" and schema is Run else nested
        value = data[f.name]
        if nested is not None and isinstance(value, dict):
            yield from _computed_leaves(nested, value, protocol, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


def test_uid_follows_exactly_the_computed_fields(config):
    base = run_uid(config)
    data = OmegaConf.to_container(config)
    leaves = list(_computed_leaves(Run, data, ids.engine_schemas()[config.engine]))
    assert len(leaves) > 40
    for key, value in leaves:
        changed = config.copy()
        new = "finetune" if key == "engine" else _changed(value, key)  # an engine with the same protocol
        OmegaConf.update(changed, key, new, force_add=True)
        assert run_uid(changed) != base, f"changing {key} does not change the uid"
    computed = {key for key, _ in leaves}
    others = [
        (k, v) for k, v in _leaves(data) if not {k, *(k[:i] for i, c in enumerate(k) if c == ".")} & computed
    ]
    assert {k for k, _ in others} >= {"protocol.description", "train.max_nonfinite_steps", "data.root"}
    for key, value in others:  # where a run is launched, stored or shown does not change what it computes
        changed = config.copy()
        OmegaConf.update(changed, key, _changed(value) if not isinstance(value, dict) else {1: 2.0})
        assert run_uid(changed) == base, key


def test_the_uid_holds_what_differs_from_the_defaults_and_the_version(tmp_path, monkeypatch):
    """A value equal to its default is not in the identity, so a field added with a default keeps every
    uid; a field without a default always is; the identity version is hashed with it."""
    _, runs = load_recipe(write_tiny(tmp_path, tmp_path / "runs"), TINY_OVERRIDES)
    config = next(run.config for run in runs if run.rows == ["sar"])
    held = identity(config)
    assert "loss" in held and held["loss"] == {"sar": True}  # the SAR row: lambda 0.01 is the default
    assert "train" not in held and "eval" not in held and "upstream" not in held
    assert {"model", "epochs", "protocol"} <= set(held) and "lr" in held["protocol"]  # no defaults
    base = run_uid(config)
    monkeypatch.setattr(ids, "IDENTITY_VERSION", IDENTITY_VERSION + 1)
    assert run_uid(config) != base


def test_a_changed_default_needs_a_new_identity_version(monkeypatch):
    """The defaults the uids of this version leave out are kept per version under tests/golden/: changing
    one without a new IDENTITY_VERSION (and its file) would make a stored run look like a run that
    computes something else. The guard itself: a changed default is caught."""
    path = GOLDEN / f"identity-defaults-v{IDENTITY_VERSION}.json"
    assert path.is_file(), (
        f"IDENTITY_VERSION {IDENTITY_VERSION} has no {path.name}: write ids.defaults() there"
    )
    golden = _flat(json.loads(path.read_text()))
    current = _flat(ids.defaults())
    # a field added with a default keeps every uid (the uid leaves defaults out): only the defaults the
    # version's uids were made with must hold
    changed = _changed_defaults(golden, current)
    assert not changed, (
        f"a computed default changed ({changed}): bump harness.config.identity.IDENTITY_VERSION, write the "
        "new defaults to tests/golden/identity-defaults-v<N>.json, and say in the README how to migrate"
    )

    weight = next(f for f in dataclasses.fields(Loss) if f.name == "weight")
    monkeypatch.setattr(weight, "default", 0.02)
    assert [key for key in _changed_defaults(golden, _flat(ids.defaults())) if key.endswith("loss.weight")]


def _changed_defaults(golden: dict[str, object], current: dict[str, object]) -> dict[str, tuple]:
    """The golden defaults that differ now or are gone: (then, now) by key."""
    return {
        key: (value, current.get(key, "(removed)"))
        for key, value in golden.items()
        if current.get(key, "(removed)") != value
    }


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """`{"a": {"b": 1}}` as `{"a.b": 1}`."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_run_folders_are_readable_and_found_by_their_uid(tmp_path):
    assert folder_name("1a/0.01", 2, "0123456789ab") == "1a_0.01-s2-0123456789ab"
    _, runs = load_recipe(write_tiny(tmp_path, tmp_path / "runs"), TINY_OVERRIDES)
    by_row = {run.rows[0]: run for run in runs}
    assert by_row["sar"].folder.name == f"sar-s0-{by_row['sar'].uid}"
    # a run shared by rows of several recipes is found whichever row named its folder
    other = by_row["sar"].folder.with_name(f"another-row-s0-{by_row['sar'].uid}")
    other.mkdir(parents=True)
    assert by_row["sar"].folder == other and by_row["base"].folder.name.startswith("base-s0-")


def _v1_configs():
    return {
        folder: yaml.safe_load((folder / "config.yaml").read_text()) for folder in STORE_V1.glob("runs/*/*")
    }


# the local scale of the release that wrote tests/fixtures/store_v1 (local defaults are the recipe's, not
# the run's: a run resolved with other ones is another run, whatever the identity version)
V1_LOCAL_DEFAULTS = ["local.eval_every=1", "local.standin_per_class=null"]


def test_a_run_stored_by_version_1_reads_as_this_versions_run(tmp_path):
    """Each run of a store written by version 1 (tests/fixtures/store_v1, written by the release before)
    keeps of its protocol what its engine reads, and has the uid that this version gives the same run of
    the same recipe, once its upstream is re-keyed."""
    old = _v1_configs()
    assert {c["engine"] for c in old.values()} >= {"supervised", "finetune", "evaluate", "dino", "mocov3"}
    new: dict[str, str] = {}  # old uid -> new uid, upstream runs first
    for folder, config in sorted(old.items(), key=lambda item: item[1]["upstream"] is not None):
        run = stored_run(config)
        assert set(run.protocol) == {
            f.name for f in dataclasses.fields(ids.engine_schemas()[config["engine"]])
        }
        if run.upstream is not None:
            run.upstream.uid = new[config["upstream"]["uid"]]
        new[folder.name] = run_uid(run)
        recipe = STORE_V1 / "recipes" / f"{config['table']}.yaml"
        overrides = [f"runs_root={tmp_path}", f"scale={config['scale']}", *V1_LOCAL_DEFAULTS]
        _, runs = load_recipe(recipe, overrides)
        (same,) = [r for r in runs if config["row"] in r.rows and r.seed == config["seed"]]
        assert new[folder.name] == same.uid, f"{folder.relative_to(STORE_V1)} ({config['engine']})"
    assert "crop_pct" not in stored_run(next(c for c in old.values() if c["engine"] == "dino")).protocol


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
