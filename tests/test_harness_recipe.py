"""Recipes: malformed recipes and overrides refused by name with nothing written; expansion; the shipped
recipes; the protocol group's inheritance; the CLI's dry run and --cfg."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import RECIPES_DIR, RecipeError, recipe_paths
from harness.recipe import load_recipe
from sar.models import LOCAL_KWARGS
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


def _refused(tmp_path: Path, argv: list[str], expected: list[str], capsys, monkeypatch) -> None:
    """The command exits 2, its message has every fragment, and nothing is written anywhere."""
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    for fragment in expected:
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert sorted(tmp_path.rglob("*")) == before  # no runs/, outputs/, .hydra/ or log files


BROKEN_RECIPES = [
    ("epochs: 3", "epocs: 3", ["tiny.yaml", "epocs", "did you mean epochs"]),
    ("epochs: 3", "epochs: many", ["tiny.yaml", "epochs", "'many'", "expected an integer"]),
    ("seeds: [0]", "seeds: 0", ["tiny.yaml", "seeds", "a list of integers"]),
    (
        "model: sar_vit_tiny_patch16_224",
        "model: sar_vit_huge",
        ["tiny.yaml", "row 'base'", "model", "sar_vit_huge"],
    ),
    (
        "dataset: synthetic",
        "dataset: imagenet22k",
        ["tiny.yaml", "data.dataset", "imagenet22k", "imagenet1k"],
    ),
    (
        "last_block: standard",
        "last_block: no_ln",
        ["tiny.yaml", "row 'base'", "last_block", "no_ln", "no_msa_skip"],
    ),
    (
        "  - protocol: deit",
        "  - protocol: beit",
        [
            "tiny.yaml",
            "protocol",
            "beit",
            "cvt, deit, dino, finetune, linear_probe_dino, linear_probe_mocov3, "
            "mocov3, pvt, semantic_fpn, swin, t2t",
        ],
    ),
    ('    label: "ViT-T"\n', "", ["tiny.yaml", "rows", "label", "missing"]),
    ("  - id: sar", "  - id: base", ["tiny.yaml", "rows", "unique", "base"]),
    ("    paper: {top1: 50.0}", "    paper: {top1: fifty}", ["tiny.yaml", "top1", "fifty", "a number"]),
    (
        "    last_block: sar",
        "    last_block: sar\n    lossy: 1",
        ["tiny.yaml", "lossy", "not a key of Row", "did you mean loss?"],
    ),
    ("weight: 0.01", "weight: -1", ["tiny.yaml", "row 'sar'", "loss.weight", "-1", ">= 0"]),
    (
        "depth: 2, num_heads: 3}\n    last_block: standard",
        "depth: -3, num_heads: 3}\n    last_block: standard",
        ["tiny.yaml", "row 'base'", "model_kwargs", "depth=-3", "cannot be built"],
    ),
    ("name: tiny", "name: ../../../tmp/x", ["tiny.yaml", "name", "../../../tmp/x", "plain name"]),
    (
        "name: tiny",
        "name: tiny\nstore: /tmp/elsewhere",
        ["tiny.yaml", "store", "/tmp/elsewhere", "plain name"],
    ),
    ("    baseline: base", "    baseline: nope", ["tiny.yaml", "row 'sar'", "baseline", "nope"]),
    ("name: tiny", "name: !!python/object/apply:os.system [echo]", ["tiny.yaml", "python", "plain data"]),
    ("seeds: [0]", "seeds: [0", ["tiny.yaml", "not valid YAML"]),
    ("rows:\n", "rows: []\nunused:\n", ["tiny.yaml", "unused"]),
    ("  - recipe_schema\n", "", ["tiny.yaml", "defaults", "recipe_schema"]),
    ("name: tiny", "name: tiny\nlambda_sweep: 1z", ["tiny.yaml", "lambda_sweep", "1z"]),
]


@pytest.mark.parametrize(("old", "new", "expected"), BROKEN_RECIPES)
def test_broken_recipes_are_refused_by_file_key_and_expectation(
    tiny, tmp_path, old, new, expected, capsys, monkeypatch
):
    _refused(tmp_path, ["run", str(_broken(tiny, old, new)), *TINY_OVERRIDES], expected, capsys, monkeypatch)


def test_a_choice_outside_its_enum_is_refused_by_omegaconf(tiny, tmp_path, capsys, monkeypatch):
    """Choice fields are enums: the recipe's, an override's and a protocol file's values are refused when
    composed or parsed, naming the file or override, the key, the value and the choices."""
    original = tiny.read_text()
    broken = _broken(tiny, "weight: 0.01", "weight: 0.01, variant: tvv")
    expected = ["tiny.yaml", "loss.variant", "'tvv'", "entropy | tv"]
    _refused(tmp_path, ["run", str(broken), *TINY_OVERRIDES], expected, capsys, monkeypatch)
    tiny.write_text(original)
    expected = ["override 'protocol.amp=fp8'", "protocol.amp", "'fp8'", "bf16 | fp16 | off"]
    _refused(tmp_path, ["run", str(tiny), *TINY_OVERRIDES, "protocol.amp=fp8"], expected, capsys, monkeypatch)
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "mine.yaml").write_text("defaults: [deit, _self_]\nname: mine\namp: fp8\n")
    expected = ["protocol 'mine'", "amp", "'fp8'", "bf16 | fp16 | off"]
    _refused(tmp_path, ["run", str(tiny), *TINY_OVERRIDES, "protocol=mine"], expected, capsys, monkeypatch)


def test_a_recipe_without_rows_is_refused(tmp_path, capsys, monkeypatch):
    path = tmp_path / "empty.yaml"
    path.write_text(
        "defaults: [recipe_schema, {protocol: deit}, _self_]\nname: e\ntitle: t\nreproduces: r\nrows: []\n"
    )
    _refused(tmp_path, ["run", str(path)], ["empty.yaml", "rows", "at least one row"], capsys, monkeypatch)


BAD_OVERRIDES = [
    (["epoch=10"], ["override 'epoch=10'", "unknown key 'epoch'", "did you mean epochs"]),
    (["protocol.lrr=1"], ["protocol.lrr", "not a key of 'protocol'", "did you mean lr?"]),
    (["seeds=0"], ["override 'seeds=0'", "seeds", "a list of integers"]),
    (["protocol.lr=fast"], ["override 'protocol.lr=fast'", "protocol.lr", "'fast'", "a number"]),
    (["scale=huge"], ["scale", "huge", "paper | local"]),
    (["launcher=cloud"], ["override 'launcher=cloud'", "launcher", "cloud", "slurm"]),
    (["seeds"], ["override 'seeds'", "key=value"]),
    (["loss.weight=0.01,0.1"], ["override 'loss.weight=0.01,0.1'", "-m"]),
    (["-m", "scale=paper,local"], ["override 'scale=paper,local'", "key of the recipe", "cannot be swept"]),
    (["-m", "seeds=[0],[1]"], ["seeds", "cannot be swept", "seeds=[0,1,2]"]),
    (["epochs=0"], ["override 'epochs=0'", "row 'base'", "epochs", "at least 1"]),
    (["+epochs=3"], ["override '+epochs=3'", "already set", "epochs=3"]),
    (["model_kwargs.mlp_ratio=2"], ["model_kwargs.mlp_ratio", "row 'base'", "+model_kwargs.mlp_ratio=2"]),
    (["~model_kwargs.mlp_ratio"], ["override '~model_kwargs.mlp_ratio'", "no key"]),
    (["~epochs"], ["override '~epochs'", "cannot be removed"]),
    (
        ["protocol=beit"],
        [
            "protocol",
            "beit",
            "cvt, deit, dino, finetune, linear_probe_dino, linear_probe_mocov3, "
            "mocov3, pvt, semantic_fpn, swin, t2t",
        ],
    ),
    (["+new.key=1"], ["override '+new.key=1'", "unknown key 'new.key'"]),
    (["++model_kwargs.depth=-3"], ["override '++model_kwargs.depth=-3'", "model_kwargs", "cannot be built"]),
    (["epochs=null"], ["override 'epochs=null'", "epochs"]),
    (["data.dataset=imagenet_a"], ["override 'data.dataset=imagenet_a'", "a dataset to train on"]),
    (["hydra.run.dir=x"], ["hydra.run.dir", "not settings of the harness"]),
    (["model=resnet_huge"], ["override 'model=resnet_huge'", "model", "a registered model"]),
]


@pytest.mark.parametrize(("overrides", "expected"), BAD_OVERRIDES)
def test_bad_overrides_are_blamed_by_name(tiny, tmp_path, overrides, expected, capsys, monkeypatch):
    _refused(tmp_path, ["run", str(tiny), *TINY_OVERRIDES, *overrides], expected, capsys, monkeypatch)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml")


@pytest.mark.slow
def test_every_shipped_recipe_validates_at_both_scales():
    for path in recipe_paths():
        for scale in ("paper", "local"):
            _, runs = load_recipe(path, [f"scale={scale}"])
            assert runs and all(r.config.scale == scale for r in runs)


def _leaves(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        out.update(
            _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
        )
    return out


def test_protocols_state_only_what_differs_from_the_one_they_extend():
    """A protocol file starts from its engine's schema (and states every value, which composition checks)
    or from another protocol, and then states only what differs from it: PVT is DeiT's protocol but for
    the colour jitter; T2T, CvT, Swin and fine-tuning extend DeiT, MoCo-v3's probe DINO's."""
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (RECIPES_DIR / "protocol").glob("*.yaml")}
    bases = {name for name, own in files.items() if own["defaults"][0].startswith("schema_")}
    assert bases == {"deit", "mocov3", "dino", "linear_probe_dino", "semantic_fpn"}
    for name, own in files.items():
        assert own["defaults"][1:] == ["_self_"], name
        if name in bases:
            continue
        parent = _leaves(files[own["defaults"][0]])
        restated = {k for k, v in _leaves(own).items() if k in parent and parent[k] == v and k != "name"}
        assert not restated, f"{name}.yaml restates {own['defaults'][0]}'s {sorted(restated)}"
    _, runs = load_recipe(RECIPES_DIR / "table2.yaml")
    protocol = {run.config.row: run.config.protocol for run in runs}
    assert protocol["t2t"].warmup_epochs == 10 and protocol["t2t"].lr_batch_ref is None
    assert protocol["t2t"].weight_decay == protocol["vit-s"].weight_decay == 0.05  # inherited from deit
    assert protocol["cvt"].batch_size == 2048 and not protocol["cvt"].repeated_aug
    pvt, deit = dict(protocol["pvt"]), dict(protocol["vit-s"])
    assert {k for k in pvt if pvt[k] != deit[k]} == {"name", "description", "color_jitter"}
    assert (protocol["t2t"].cooldown_epochs, protocol["t2t"].model_ema_decay) == (10, 0.99996)
    assert {run.config.epochs for run in runs if run.config.protocol.name == "t2t"} == {310}


def test_identical_rows_share_one_run():
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml")
    by_rows = {tuple(r.rows): r for r in runs}
    assert ("1a/0", "1b/C") in by_rows  # lambda = 0 with the SAR block is row C
    assert ("1a/0.01", "1b/F", "1c/sar-100") in by_rows
    assert ("1b/A", "1c/vit-100") in by_rows
    assert len(runs) == 12


def test_other_tables_reuse_the_runs_they_share():
    """Tab. 7's ViT rows, Tab. 8's 100 % column and Appendix B's SAR row are Tab. 1's runs; Tab. 13's
    baseline and SAR rows are Tab. 2's."""
    uids = {
        name: {r.uid: r for r in load_recipe(RECIPES_DIR / f"{name}.yaml")[1]}
        for name in ("table1", "table2")
    }
    for name, home, rows in (
        ("table7", "table1", {"vit-s", "vit-s-sar"}),
        ("table8", "table1", {"vit-1.00", "sar-1.00"}),
        ("appendix_b", "table1", {"sar"}),
        ("table13", "table2", {"vit-s", "vit-s-sar"}),
    ):
        _, runs = load_recipe(RECIPES_DIR / f"{name}.yaml")
        shared = {row for r in runs if r.uid in uids[home] for row in r.rows}
        assert shared == rows, name
        assert {r.config.table for r in runs} == {home}


def test_local_scale_shrinks_warm_ups_with_the_epochs():
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local", "loss.schedule=warmup_cosine"])
    for run in runs:
        c = run.config
        ratio = c.epochs / (300 if "300" in c.row else 100)
        assert c.protocol.warmup_epochs == round(20 * ratio)  # Swin's 20 warm-up epochs
        assert c.loss.warmup_epochs == (round(10 * ratio) if c.loss.sar else 0)


@pytest.mark.parametrize("scale", ["paper", "local"])
def test_figure3_and_table13_reuse_table2_runs(scale):
    """Tab. 13 reads Tab. 2's runs at either scale (the same local settings); Fig. 3 at paper scale, where
    every run validates every epoch; at local scale, where Tab. 2 validates its final epoch only, Fig. 3's
    curves are its own runs, the same but for their validations, kept in Tab. 2's store."""
    _, table2 = load_recipe(RECIPES_DIR / "table2.yaml", [f"scale={scale}"])
    _, figure3 = load_recipe(RECIPES_DIR / "figure3.yaml", [f"scale={scale}"])
    _, table13 = load_recipe(RECIPES_DIR / "table13.yaml", [f"scale={scale}"])
    shares = {r.uid for r in figure3} <= {r.uid for r in table2}
    assert shares == (scale == "paper")
    assert {r.config.table for r in figure3} == {"table2"}
    _, final_only = load_recipe(RECIPES_DIR / "figure3.yaml", [f"scale={scale}", "local.eval_every=null"])
    assert {r.uid for r in final_only} <= {r.uid for r in table2}  # the same runs but for their validations
    shared = [r for r in table13 if not r.config.loss.drloc_weight]
    assert len(shared) == 2 * len({r.seed for r in table13})  # ViT-S/16 and + SAR, every seed
    assert {r.uid for r in shared} <= {r.uid for r in table2}


def test_local_scale_maps_to_synthetic_small_models_and_fewer_epochs():
    _, runs = load_recipe(RECIPES_DIR / "table2.yaml", ["scale=local"])
    for run in runs:
        c = run.config
        assert c.data.dataset == "synthetic" and c.data.stands_for == "imagenet1k"
        assert c.model_kwargs.img_size == 64 and c.resources.gpus_per_node == 0
        assert c.epochs == 6  # Tab. 2's local epochs_factor, 2 % of 300 and of T2T's 310
        assert c.protocol.lr_batch_ref is None and c.protocol.batch_size == 64  # the base lr at batch 64


def test_local_scale_drops_strong_augmentation_unless_asked():
    """RandAugment, Mixup and CutMix are off at local scale (`local.strong_augment`), the protocol's other
    regularisers kept; `local.strong_augment=true` keeps all of the protocol's."""
    (paper, *_), (local, *_), (strong, *_) = (
        load_recipe(RECIPES_DIR / "table1.yaml", overrides)[1]
        for overrides in ([], ["scale=local"], ["scale=local", "local.strong_augment=true"])
    )
    kept = ("drop_path", "smoothing", "reprob", "color_jitter")
    strong_keys = ("auto_augment", "mixup", "cutmix")
    assert [paper.config.protocol[k] for k in strong_keys] == ["rand-m9-mstd0.5-inc1", 0.8, 1.0]
    assert [local.config.protocol[k] for k in strong_keys] == [None, 0.0, 0.0]
    assert [local.config.protocol[k] for k in kept] == [paper.config.protocol[k] for k in kept]
    assert [strong.config.protocol[k] for k in (*strong_keys, *kept)] == [
        paper.config.protocol[k] for k in (*strong_keys, *kept)
    ]
    assert local.uid != strong.uid


@pytest.mark.parametrize(
    ("overrides", "seeds"),
    [
        ([], [0]),  # paper scale: one seed unless asked
        (["scale=local"], [0, 1, 2]),  # local scale: local.seeds, three, so that seeds can separate rows
        (["scale=local", "local.seeds=[4,5]"], [4, 5]),
        (["scale=local", "seeds=[7]"], [7]),  # an explicit seeds list wins at either scale
        (["seeds=[1,2]"], [1, 2]),
    ],
)
def test_each_scale_has_its_default_seeds(overrides, seeds):
    recipe, runs = load_recipe(RECIPES_DIR / "table2.yaml", overrides)
    assert list(recipe.seeds) == seeds
    assert sorted({r.seed for r in runs}) == seeds


def test_overrides_apply_before_local_scaling():
    """`model=sar_pvt_small` at local scale gives every row PVT's small member, not its own family's."""
    _, runs = load_recipe(RECIPES_DIR / "table2.yaml", ["scale=local", "model=sar_pvt_small", "epochs=100"])
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in LOCAL_KWARGS["sar_pvt_small"].items()}
    for run in runs:
        assert run.config.model == "sar_pvt_small"
        assert dict(run.config.model_kwargs) == expected
        assert run.config.epochs == 2  # 100 epochs, scaled by Tab. 2's local epochs_factor (0.02)


def _uid_in_subprocess(path: Path) -> str:
    code = f"from harness.recipe import load_recipe as L; print(L({str(path)!r}, {TINY_OVERRIDES})[1][0].uid)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.slow
def test_uid_is_stable_across_processes(tiny):
    _, runs = load_recipe(tiny, TINY_OVERRIDES)
    assert _uid_in_subprocess(tiny) == runs[0].uid


def test_dry_run_and_validation_create_nothing(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["run", str(tiny), *TINY_OVERRIDES, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "not submitted" in out and "CPU-h" in out
    assert sorted(tmp_path.rglob("*")) == before
    assert not (Path.cwd() / "outputs").exists() and not (Path.cwd() / ".hydra").exists()


def test_dry_run_estimates_gpu_hours_for_paper_runs(capsys):
    assert main(["run", str(RECIPES_DIR / "table2.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "vit-s-sar" in line)
    tokens = line.split()
    assert "1x8 GPU" in line and int(tokens[tokens.index("GPU-h") - 1]) > 0
    total = next(line for line in out.splitlines() if line.startswith("estimated total"))
    assert int(total.split()[2]) > 0 and "0.00 CPU-hours" in total


def test_estimates_count_what_each_engine_computes():
    """Segmentation counts iterations of crops, DINO its crops and teacher, MoCo-v3 its two encoders, a
    probe forward passes only: none is zero, and each is compared with its recipe's supervised size."""
    from harness.estimate import estimated_hours

    def hours(recipe: str) -> dict[str, float]:
        return {r.rows[0]: estimated_hours(r)[1] for r in load_recipe(RECIPES_DIR / f"{recipe}.yaml")[1]}

    seg, pre, probe = hours("table12"), hours("table9_pretraining"), hours("table9")
    assert 1 < seg["pvt"] < 5  # 40k iterations x 32 crops of 512 px through PVT-Small, about 1.6 GPU-h
    assert pre["dino"] > pre["mocov3"] > 10 * probe["dino"] > 0
    assert probe["dino-jaccard"] > 0


def test_dry_run_estimates_cpu_hours_at_local_scale(capsys):
    assert main(["run", str(RECIPES_DIR / "table1.yaml"), "scale=local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("estimated total"))
    assert total.startswith("estimated total: 0 GPU-hours") and float(total.split()[4]) > 0


def test_dry_run_says_whether_each_dataset_root_exists(tmp_path, capsys):
    argv = ["run", str(RECIPES_DIR / "table2.yaml"), f"data.root={tmp_path / 'imagenet'}", "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"imagenet1k at {tmp_path / 'imagenet'}: MISSING" in out
    assert not (tmp_path / "imagenet").exists()


def test_dry_run_prints_the_sbatch_lines_of_each_job_array(capsys):
    argv = [
        "run",
        str(RECIPES_DIR / "table2.yaml"),
        "launcher=slurm",
        "launcher.partition=gpu",
        "launcher.constraint=a100",
        "+launcher.additional.mail_type=END",
        "--dry-run",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("Slurm job array of") == 1  # one table, one job shape
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --constraint=a100",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --mem=320GB",
        "#SBATCH --time=1440",
        "#SBATCH --array=0-9%10",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --mail-type=END",
    ):
        assert line in out, line
    local = main(["run", str(RECIPES_DIR / "table1.yaml"), "scale=local", "launcher=slurm", "--dry-run"])
    out = capsys.readouterr().out
    assert local == 0 and "#SBATCH --cpus-per-task=2" in out and "#SBATCH --mem=6GB" in out
    assert "--gpus-per-node" not in out


def test_cfg_prints_each_resolved_run_as_yaml(tiny, capsys):
    assert main(["run", str(tiny), *TINY_OVERRIDES, "seeds=[0,1]", "--cfg"]) == 0
    out = capsys.readouterr().out
    documents = [d for d in out.split("---\n") if d.strip()]
    _, runs = load_recipe(tiny, [*TINY_OVERRIDES, "seeds=[0,1]"])
    assert len(documents) == len(runs) == 4
    for document, run in zip(documents, runs, strict=True):
        assert document.startswith(f"# run {run.uid}: rows {', '.join(run.rows)}, seed {run.seed}")
        config = yaml.safe_load(document)
        assert config["seed"] == run.seed and config["protocol"]["batch_size"] == 16


def test_missing_dataset_fails_before_launch(tmp_path, capsys):
    code = main(
        ["run", str(RECIPES_DIR / "table1.yaml"), f"runs_root={tmp_path / 'runs'}", "launcher=inline"]
    )
    err = capsys.readouterr().err
    assert code == 2
    for fragment in ("imagenet100", "data.root", "scale=local", "train"):
        assert fragment in err, f"{fragment!r} not in: {err}"
    assert not (tmp_path / "runs").exists()


def test_list_names_every_recipe_without_importing_torch():
    code = (
        "import sys; from harness.cli import main; main(['list']); "
        "print(sorted({'torch', 'timm', 'hydra'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True, text=True
    ).stdout
    for name in ("table1.yaml", "table2.yaml", "figure3.yaml"):
        assert name in out
    assert out.strip().splitlines()[-1] == "[]"


def test_the_schema_mirrors_the_synthetic_dataset_defaults():
    """schema.Synthetic exists because OmegaConf cannot merge into the frozen SyntheticConfig."""
    from dataclasses import asdict

    from harness.config.schema import Synthetic
    from harness.data import SyntheticConfig

    assert asdict(Synthetic()) == asdict(SyntheticConfig())


def test_the_run_store_does_not_depend_on_the_working_folder(tmp_path, monkeypatch, capsys):
    """Relative to the project by default, $SAR_RUNS when set; an explicit relative runs_root is anchored
    to the folder the command was given in, once, when the runs are resolved."""
    monkeypatch.delenv("SAR_RUNS", raising=False)
    folders = set()
    for cwd in (REPO, tmp_path):
        monkeypatch.chdir(cwd)
        folders |= {r.folder for r in load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local"])[1]}
    assert len(folders) == 12 * 3 and all(  # 12 distinct runs x the three local seeds
        f.is_absolute() and f.parent == REPO / "runs" / "table1" for f in folders
    )
    monkeypatch.setenv("SAR_RUNS", str(tmp_path / "store"))
    assert main(["status", str(RECIPES_DIR / "table1.yaml"), "scale=local"]) == 0
    assert f"run store: {tmp_path / 'store' / 'table1'}" in capsys.readouterr().out
    _, runs = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local", "runs_root=mine"])
    assert {r.folder.parent for r in runs} == {tmp_path / "mine" / "table1"}
    assert {r.config.launcher.folder for r in runs} == {str(tmp_path / "mine" / "_submitit")}


def test_a_local_run_validates_its_final_epoch_unless_its_recipe_plots_a_curve():
    """One validation per local run (an unbiased final top-1), but Fig. 3's runs, whose curves it draws,
    every epoch; engines that never validate by epoch keep the default (and their uids)."""
    for name in ("table1", "table2", "table13"):
        _, runs = load_recipe(RECIPES_DIR / f"{name}.yaml", ["scale=local"])
        assert all(r.config.train.eval_every == r.config.epochs > 1 for r in runs), name
    _, figure3 = load_recipe(RECIPES_DIR / "figure3.yaml", ["scale=local"])
    assert {r.config.train.eval_every for r in figure3} == {1}
    _, pretraining = load_recipe(RECIPES_DIR / "table9_pretraining.yaml", ["scale=local"])
    assert {r.config.train.eval_every for r in pretraining} == {1}
