"""Recipes: validation errors that name file, key and expectation; uids; expansion; the CLI's dry run."""

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from harness.cli import main
from harness.recipe import NOT_IDENTITY, RECIPES_DIR, RecipeError, identity, load_recipe, run_uid
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny(tmp_path, tmp_path / "runs")


def _broken(tiny: Path, old: str, new: str) -> Path:
    text = tiny.read_text()
    assert old in text
    tiny.write_text(text.replace(old, new, 1))
    return tiny


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("epochs: 3", "epocs: 3", ["tiny.yaml", "epocs"]),
        ("epochs: 3", "epochs: many", ["tiny.yaml", "epochs", "many"]),
        (
            "model: sar_vit_tiny_patch16_224",
            "model: sar_vit_huge",
            ["tiny.yaml", "row 'base'", "model", "sar_vit_huge"],
        ),
        ("dataset: synthetic", "dataset: imagenet22k", ["tiny.yaml", "dataset", "imagenet22k", "imagenet1k"]),
        ("last_block: standard", "last_block: no_ln", ["row 'base'", "last_block", "no_ln", "no_msa_skip"]),
        ("protocol: deit", "protocol: swin", ["tiny.yaml", "protocol", "swin", "deit"]),
        ('    label: "ViT-T"\n', "", ["tiny.yaml", "label"]),
        ("  - id: sar", "  - id: base", ["tiny.yaml", "unique"]),
        ("    paper: {top1: 50.0}", "    paper: {top1: fifty}", ["tiny.yaml", "top1", "fifty"]),
        ("    last_block: sar", "    last_block: sar\n    lossy: 1", ["tiny.yaml", "lossy"]),
        ("weight: 0.01", "weight: -1", ["row 'sar'", "loss.weight"]),
        ("seeds: [0]", "seeds: [0", ["tiny.yaml", "YAML"]),
    ],
)
def test_broken_recipes_name_file_key_and_expectation(tiny, old, new, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(_broken(tiny, old, new), TINY_OVERRIDES)
    for fragment in expected:
        assert fragment in str(error.value), f"{fragment!r} not in: {error.value}"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("epochz=3", ["epochz"]),
        ("protocol.lr=fast", ["protocol.lr", "fast"]),
        ("scale=huge", ["scale", "huge", "local"]),
        ("launcher=cloud", ["launcher", "cloud", "slurm"]),
        ("seeds", ["seeds", "key=value"]),
    ],
)
def test_bad_overrides_are_named(tiny, override, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny, [*TINY_OVERRIDES, override])
    for fragment in expected:
        assert fragment in str(error.value), f"{fragment!r} not in: {error.value}"


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_every_shipped_recipe_validates_at_both_scales():
    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        for scale in ("paper", "local"):
            _, runs = load_recipe(path, [f"scale={scale}"])
            assert runs and all(r.config.scale == scale for r in runs)


def test_overrides_reach_every_run(tiny):
    _, runs = load_recipe(
        tiny, [*TINY_OVERRIDES, "seeds=[0,1,2]", "epochs=5", "launcher=slurm", "launcher.partition=gpu"]
    )
    assert len(runs) == 6
    assert {r.config.epochs for r in runs} == {5}
    assert {(r.config.launcher.name, r.config.launcher.partition) for r in runs} == {("slurm", "gpu")}
    assert sorted(r.config.seed for r in runs) == [0, 0, 1, 1, 2, 2]


def test_identical_rows_share_one_run():
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml")
    by_rows = {tuple(r.rows): r for r in runs}
    assert ("1a/0", "1b/C") in by_rows  # lambda = 0 with the SAR block is row C
    assert ("1a/0.01", "1b/F", "1c/sar-100") in by_rows
    assert ("1b/A", "1c/vit-100") in by_rows
    assert len(runs) == 12


def test_figure3_reuses_table2_runs():
    _, table2 = load_recipe(RECIPES_DIR / "table2.yaml")
    _, figure3 = load_recipe(RECIPES_DIR / "figure3.yaml")
    assert {r.uid for r in figure3} <= {r.uid for r in table2}
    assert {r.config.table for r in figure3} == {"table2"}


def test_local_scale_maps_to_synthetic_small_models_and_fewer_epochs():
    _, runs = load_recipe(RECIPES_DIR / "table2.yaml", ["scale=local"])
    for run in runs:
        c = run.config
        assert c.data.dataset == "synthetic" and c.data.stands_for == "imagenet1k"
        assert c.model_kwargs.img_size == 64 and c.epochs == 24 and c.resources.gpus_per_node == 0


def _uid_in_subprocess(path: Path) -> str:
    code = f"from harness.recipe import load_recipe as L; print(L({str(path)!r}, {TINY_OVERRIDES})[1][0].uid)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_uid_is_stable_across_processes(tiny):
    _, runs = load_recipe(tiny, TINY_OVERRIDES)
    assert _uid_in_subprocess(tiny) == runs[0].uid


def _leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def _changed(value):
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


def test_uid_is_sensitive_to_every_config_value(tiny):
    _, runs = load_recipe(tiny, TINY_OVERRIDES)
    config = runs[0].config
    base = run_uid(config)
    leaves = list(_leaves(identity(config)))
    assert len(leaves) > 40
    for key, value in leaves:
        changed = config.copy()
        OmegaConf.update(changed, key, _changed(value), force_add=True)
        assert run_uid(changed) != base, f"changing {key} does not change the uid"
    identity_keys = {key for key, _ in leaves}
    others = [(k, v) for k, v in _leaves(OmegaConf.to_container(config)) if k not in identity_keys]
    assert {k.split(".")[0] for k, _ in others} >= NOT_IDENTITY - {"paper"}
    for key, value in others:  # where a run is launched, stored or shown does not change what it computes
        changed = config.copy()
        OmegaConf.update(changed, key, _changed(value) if not isinstance(value, dict) else {1: 2.0})
        assert run_uid(changed) == base, key


def test_dry_run_creates_nothing(tiny, tmp_path, capsys):
    before = sorted(p for p in tmp_path.rglob("*"))
    assert main(["run", str(tiny), *TINY_OVERRIDES, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "pending" in out and "est. GPU-h" in out
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_dry_run_estimates_gpu_hours_for_paper_runs(capsys):
    assert main(["run", str(RECIPES_DIR / "table2.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "vit-s-sar" in line)
    assert "1x8 GPU" in line and int(line.split()[-2]) > 0


def test_missing_dataset_fails_before_launch(tmp_path, capsys):
    code = main(
        ["run", str(RECIPES_DIR / "table1.yaml"), f"runs_root={tmp_path / 'runs'}", "launcher=inline"]
    )
    err = capsys.readouterr().err
    assert code == 2
    for fragment in ("imagenet100", "data.root", "scale=local", "train"):
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not (tmp_path / "runs").exists()


def test_list_names_every_recipe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("table1.yaml", "table2.yaml", "figure3.yaml"):
        assert name in out


def test_the_schema_mirrors_the_synthetic_dataset_defaults():
    """schema.Synthetic exists because OmegaConf cannot merge into the frozen SyntheticConfig."""
    from dataclasses import asdict

    from harness.data import SyntheticConfig
    from harness.schema import Synthetic

    assert asdict(Synthetic()) == asdict(SyntheticConfig())
