"""Hydra's override grammar on recipes: each form, sweeps with -m and their de-duplication by uid."""

import pytest

from harness.cli import main
from harness.config import RecipeError
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path, tmp_path / "runs")


def _runs(tiny, *overrides, multirun=False):
    return load_recipe(tiny, [*TINY_OVERRIDES, *overrides], multirun=multirun)[1]


def test_set_reaches_every_run(tiny):
    runs = _runs(tiny, "seeds=[0,1,2]", "epochs=5", "launcher=slurm", "launcher.partition=gpu")
    assert len(runs) == 6
    assert {r.config.epochs for r in runs} == {5}
    assert {(r.config.launcher.name, r.config.launcher.partition) for r in runs} == {("slurm", "gpu")}
    assert sorted(r.config.seed for r in runs) == [0, 0, 1, 1, 2, 2]


def test_values_take_the_schema_type(tiny):
    assert [r.uid for r in _runs(tiny, "protocol.lr=1")] == [r.uid for r in _runs(tiny, "protocol.lr=1.0")]
    assert {type(r.config.protocol.lr) for r in _runs(tiny, "protocol.lr=1")} == {float}


def test_add_force_add_and_delete_inside_model_kwargs(tiny):
    added = _runs(tiny, "+model_kwargs.qkv_bias=false")
    assert {r.config.model_kwargs.qkv_bias for r in added} == {False}
    forced = _runs(tiny, "++model_kwargs.depth=3", "++model_kwargs.mlp_ratio=2.0")
    assert {(r.config.model_kwargs.depth, r.config.model_kwargs.mlp_ratio) for r in forced} == {(3, 2.0)}
    deleted = _runs(tiny, "~model_kwargs.num_heads")
    assert all("num_heads" not in r.config.model_kwargs for r in deleted)
    assert not {r.uid for r in deleted} & {r.uid for r in _runs(tiny)}
    assert {r.uid for r in _runs(tiny, "~model_kwargs.depth=2")} == {
        r.uid for r in _runs(tiny, "~model_kwargs.depth")
    }


def test_null_lists_quoted_strings_and_mappings(tiny):
    runs = _runs(
        tiny,
        "protocol.clip_grad=5.0",
        "launcher.partition=null",
        "protocol.description='a, b'",
        "loss={sar: true, weight: 0.1}",
    )
    for run in runs:
        assert run.config.protocol.clip_grad == 5.0 and run.config.launcher.partition is None
        assert run.config.protocol.description == "a, b"
        assert run.config.loss.sar and run.config.loss.weight == 0.1 and run.config.loss.variant == "entropy"
    assert _runs(tiny, "~paper.top1")[0].config.paper == {}
    merged = _runs(tiny, "model_kwargs={mlp_ratio: 2.0}")  # a mapping merges: keys a row lacks are added
    assert {(r.config.model_kwargs.mlp_ratio, r.config.model_kwargs.depth) for r in merged} == {(2.0, 2)}


def test_protocol_selects_an_option_of_the_group_for_every_row(tiny):
    for run in load_recipe(tiny, ["protocol=t2t", "epochs=310"])[1]:
        p = run.config.protocol
        assert p.name == "t2t" and p.warmup_epochs == 10 and p.interpolation == "random"
    with pytest.raises(RecipeError, match=r"protocol\.cooldown_epochs.*-1.*at least 0"):
        load_recipe(tiny, ["protocol=t2t", "protocol.cooldown_epochs=-1"])


def test_recipe_level_overrides_reach_hydra(tiny):
    recipe, runs = load_recipe(
        tiny, [*TINY_OVERRIDES, "scale=local", "local.min_epochs=5", "local.synthetic.image_size=32"]
    )
    assert recipe.scale == "local" and recipe.local.min_epochs == 5
    assert {r.config.epochs for r in runs} == {5}


def test_sweeps_expand_into_the_product_and_merge_by_uid(tiny):
    runs = _runs(tiny, "loss.weight=0.001,0.01", multirun=True)
    assert len(runs) == 3  # the baseline row has no SAR loss: its weight does not matter, it trains once
    base = next(r for r in runs if r.rows == ["base"])
    assert base.sweeps == [("loss.weight=0.001",), ("loss.weight=0.01",)]
    assert sorted(r.config.loss.weight for r in runs if r.rows == ["sar"]) == [0.001, 0.01]
    product = _runs(tiny, "epochs=range(2,4)", "protocol=deit,t2t", multirun=True)
    assert len(product) == 8
    assert {(r.config.epochs, r.config.protocol.name) for r in product} == {
        (2, "deit"),
        (3, "deit"),
        (2, "t2t"),
        (3, "t2t"),
    }
    assert len(_runs(tiny, "loss.weight=choice(0.01,0.01)", multirun=True)) == 2


def test_multirun_on_the_command_line(tiny, capsys):
    assert main(["run", str(tiny), *TINY_OVERRIDES, "-m", "epochs=2,3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s)" in out and "sweep" in out and "epochs=2" in out and "epochs=3" in out
    assert main(["status", str(tiny), *TINY_OVERRIDES, "--multirun", "epochs=2,3"]) == 0
