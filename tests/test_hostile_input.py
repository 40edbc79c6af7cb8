"""Hostile but realistic input: the local block's values, interpolations, a launcher or a store that cannot
be used, an alias bomb, absurd values, odd recipe files; each refused before anything is launched or
written, with a message that names the file or override, the key and what was expected, in bounded size;
and Ctrl-C on an inline run ends with a line, not a traceback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.recipe import load_recipe
from harness.records import read_object
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny
from tests.test_harness_recipe import REPO, _broken, _refused
from tests.test_store_fuzz import Payload

LOCAL = ["scale=local", "local.synthetic.train_per_class=4", "local.synthetic.val_per_class=2"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny(tmp_path, tmp_path / "runs")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["local.batch_size=0"], ["override 'local.batch_size=0'", "key 'local.batch_size'", "at least 1"]),
        (["local.num_workers=-1"], ["key 'local.num_workers'", "got -1", "at least 0"]),
        (["local.synthetic.image_size=8"], ["key 'local.synthetic'", "image_size must be at least 32"]),
        (
            ["local.synthetic.min_object=0.9", "local.synthetic.max_object=0.5"],
            ["key 'local.synthetic'", "min_object <= max_object", "0.9 and 0.5"],
        ),
        (["local.epochs_factor=0", "local.min_epochs=0"], ["key 'local.min_epochs'", "at least 1"]),
        (["local.seeds=[-1]"], ["key 'local.seeds'", "got -1", "[0, 2**32)"]),
        (["local.iterations_factor=0"], ["key 'local.iterations_factor'", "a fraction in (0, 1]"]),
        (["local.cpus=0"], ["key 'local.cpus'", "at least 1"]),
        (["local.epochs_factor=1e308"], ["key 'local.epochs_factor'", "a fraction in [0, 1]"]),
    ],
)
def test_the_local_block_is_validated_before_launch(tiny, tmp_path, overrides, expected, capsys, monkeypatch):
    argv = ["run", str(tiny), *TINY_OVERRIDES, *LOCAL, *overrides]
    _refused(tmp_path, argv, ["tiny.yaml", *expected], capsys, monkeypatch)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["seeds=[-1]"], ["override 'seeds=[-1]'", "key 'seeds'", "[0, 2**32)"]),
        (["seed=-3"], ["override 'seed=-3'", "row 'base'", "key 'seed'"]),
        (["epochs=100000000000000000000"], ["key 'epochs'", "fits 64 bits"]),
        (["runs_root="], ["override 'runs_root='", "key 'runs_root'", "got ''", "leave the key out"]),
        (["launcher.folder="], ["key 'launcher.folder'", "got ''"]),
        (["data.num_workers=-2"], ["key 'data.num_workers'", "at least 0"]),
        (["train.max_skipped_fraction=2"], ["key 'train.max_skipped_fraction'", "[0, 1]"]),
        (["train.collective_timeout_s=0"], ["key 'train.collective_timeout_s'", "above 0"]),
    ],
)
def test_absurd_values_are_refused(tiny, tmp_path, overrides, expected, capsys, monkeypatch):
    _refused(
        tmp_path,
        ["run", str(tiny), *TINY_OVERRIDES, *overrides],
        ["tiny.yaml", *expected],
        capsys,
        monkeypatch,
    )


def test_a_run_estimated_beyond_a_year_is_announced(tiny, capsys):
    assert main(["run", str(tiny), *TINY_OVERRIDES, "epochs=1000000000000", "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: ") == 2 and "1,000,000,000,000 epochs: is that meant?" in err
    assert "CPU-hours" in err and "years on its 1 CPU(s)" in err


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "epochs: 3",
            "epochs: ${nonexistent}",
            ["key 'epochs'", "Interpolation key 'nonexistent' not found"],
        ),
        ('title: "Tiny: a test table"', "title: ${oc.env:SAR_UNSET_VARIABLE}", ["key 'title'", "SAR_UNSET"]),
        (
            "    model_kwargs: {img_size: 32",
            "    model_kwargs: {loop: &loop [*loop], img_size: 32",
            ["nested more than 32 levels"],
        ),
    ],
)
def test_interpolations_and_recursive_aliases_are_refused_by_key(
    tiny, tmp_path, old, new, expected, capsys, monkeypatch
):
    monkeypatch.delenv("SAR_UNSET_VARIABLE", raising=False)
    _refused(
        tmp_path,
        ["run", str(_broken(tiny, old, new)), "--dry-run"],
        ["tiny.yaml", *expected],
        capsys,
        monkeypatch,
    )


def _bomb(levels: int) -> str:
    """A mapping whose last alias repeats the one before ten times, `levels` times: 10**levels values."""
    anchors = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"
    for level in range(1, levels + 1):
        anchors += f", a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 10)}]"
    return "{" + anchors + ", img_size: 32"


def test_an_alias_bomb_is_refused_at_once_even_with_dry_run(tiny, tmp_path, capsys, monkeypatch):
    bomb = _broken(tiny, "    model_kwargs: {img_size: 32", "    model_kwargs: " + _bomb(9))
    assert len(bomb.read_bytes()) < 2000
    started = time.monotonic()
    _refused(
        tmp_path,
        ["run", str(bomb), "--dry-run"],
        ["tiny.yaml", "holds 12,345,679,131 values", "alias bomb"],
        capsys,
        monkeypatch,
    )
    assert time.monotonic() - started < 10


def test_messages_stay_short_whatever_the_values(tiny, tmp_path, capsys, monkeypatch):
    """A small bomb within the bound, in model arguments that cannot build: the message names them all
    in a few lines (it was 480 KB)."""
    bomb = _broken(tiny, "    model_kwargs: {img_size: 32", "    model_kwargs: " + _bomb(2))
    expected = ["tiny.yaml", "row 'base'", "model_kwargs", "cannot be built"]
    _refused(tmp_path, ["run", str(bomb), *TINY_OVERRIDES, "--dry-run"], expected, capsys, monkeypatch)
    main(["run", str(bomb), *TINY_OVERRIDES, "--dry-run"])
    assert len(capsys.readouterr().err) < 2100


def test_recipe_files_that_are_not_recipes(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    _refused(
        tmp_path,
        ["run", str(empty), "scale=local"],
        ["empty.yaml", "the recipe is empty"],
        capsys,
        monkeypatch,
    )
    yml = write_tiny(tmp_path, tmp_path / "runs").rename(tmp_path / "tiny.yml")
    _refused(
        tmp_path,
        ["run", str(yml)],
        ["tiny.yml", "a .yaml file", "rename it", "tiny.yaml"],
        capsys,
        monkeypatch,
    )
    _refused(tmp_path, ["run", str(tmp_path)], ["is a folder, not a recipe file"], capsys, monkeypatch)


FINETUNE_ROW = """  - id: tuned
    label: "ViT-T + SAR, fine-tuned"
    engine: finetune
    from: {recipe: sub/up.yaml, row: sar}
    last_block: sar
"""


def test_a_relative_upstream_recipe_is_found_beside_the_recipe(tmp_path, monkeypatch):
    """`from.recipe: sub/up.yaml` is the recipe's neighbour, whatever folder the command runs from."""
    (tmp_path / "sub").mkdir()
    up = write_tiny(tmp_path / "sub", tmp_path / "runs").rename(tmp_path / "sub" / "up.yaml")
    down = tmp_path / "down.yaml"
    head = up.read_text().replace("name: tiny", "name: down").split("rows:\n")[0]
    kwargs = up.read_text().split("    model_kwargs: ")[1].splitlines()[0]
    down.write_text(f"{head}rows:\n{FINETUNE_ROW}    model_kwargs: {kwargs}\n")
    monkeypatch.chdir(REPO)
    (tuned,) = load_recipe(down, TINY_OVERRIDES)[1]
    assert tuned.upstream is not None and tuned.upstream.config.recipe_file == str(up.resolve())


def test_launching_where_it_cannot_stops_before_anything_starts(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    expected = ["launcher=slurm", "no sbatch", "launcher=local"]
    _refused(tmp_path, ["run", str(tiny), *TINY_OVERRIDES, "launcher=slurm"], expected, capsys, monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("")
    for launcher in ("inline", "local"):
        argv = ["run", str(tiny), *TINY_OVERRIDES, f"launcher={launcher}", f"runs_root={afile / 'runs'}"]
        _refused(
            tmp_path,
            argv,
            ["afile", "not a folder this process can write in", "runs_root"],
            capsys,
            monkeypatch,
        )
    _refused(
        tmp_path,
        ["report", str(tiny), "--out", str(afile)],
        ["--out", "afile is a file"],
        capsys,
        monkeypatch,
    )


@pytest.mark.slow
def test_a_refused_checkpoint_is_named_in_the_one_line_failure(tiny, tmp_path, capsys):
    run = load_recipe(tiny, TINY_OVERRIDES)[1][0]
    run.folder.mkdir(parents=True)
    torch.save({"model": Payload(tmp_path / "executed")}, run.folder / "checkpoint.pt")
    assert main(["run", str(tiny), *TINY_OVERRIDES, "launcher=inline"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith(f"{run.uid} (tiny base) failed: "))
    assert f"checkpoint {tmp_path}" in line  # the line is bounded: its middle may be left out
    assert "weights_only=True refuses to build" in line and "GLOBAL posix.system" in line
    failure = (run.folder / "failure.json").read_text()  # the whole reason
    assert f"checkpoint {run.folder / 'checkpoint.pt'} cannot be read" in failure
    assert not (tmp_path / "executed").exists()


@pytest.mark.slow
def test_ctrl_c_on_an_inline_run_says_how_to_resume(tiny, tmp_path):
    overrides = [*TINY_OVERRIDES, "epochs=200", "launcher=inline"]
    argv = [sys.executable, "-m", "harness", "run", str(tiny), *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's disposition in a terminal, whatever this suite inherited: under nohup or a script's `&`
        # SIGINT is ignored, and `harness run` rightly keeps ignoring it (tests/test_lifecycle.py)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    beat = load_recipe(tiny, overrides)[1][0].folder / "heartbeat"
    deadline = time.monotonic() + 180
    while "step" not in (read_object(beat)[0] or {}):
        assert time.monotonic() < deadline and proc.poll() is None, "never started training"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert (
        "Traceback" not in err
        and "interrupted (SIGINT): resume with the same command (python -m harness run" in err
    )
    assert json.loads(beat.read_text())["pid"] == proc.pid  # it was this command that trained
