"""`--dry-run`'s #SBATCH lines (harness.launch.sbatch_lines, built with submitit's private
`_make_sbatch_string`) are the lines submitit writes when it submits the same job array: a fake `sbatch`
keeps the script it is given, so a submitit upgrade that changes the private function fails here."""

import stat
from pathlib import Path

import pytest

from harness.launch import _executor, sbatch_lines
from harness.recipe import load_recipe
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


def _fake_sbatch(folder: Path, kept: Path) -> Path:
    """An `sbatch` that copies the script it is given to `kept` and answers as Slurm does."""
    folder.mkdir()
    sbatch = folder / "sbatch"
    sbatch.write_text(f'#!/bin/sh\ncp "$1" "{kept}"\necho "Submitted batch job 4242"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    return folder


@pytest.mark.parametrize("after", [(), ("4141",)])
@pytest.mark.parametrize("size", [1, 2])
def test_dry_run_lines_are_the_lines_submitit_submits(tmp_path, monkeypatch, size, after):
    kept = tmp_path / "submitted.sh"
    monkeypatch.setenv("PATH", f"{_fake_sbatch(tmp_path / 'bin', kept)}:{Path('/usr/bin')}:{Path('/bin')}")
    recipe = write_tiny(tmp_path, tmp_path / "runs")
    slurm = ["launcher=slurm", "launcher.partition=gpu", "+launcher.additional.mail_type=END"]
    _, runs = load_recipe(recipe, [*TINY_OVERRIDES, *slurm, f"seeds={list(range(size))}"])
    runs = [run for run in runs if run.rows == ["base"]]
    assert len(runs) == size
    _executor("slurm", runs[0], after).map_array(print, [run.uid for run in runs])
    submitted = [line for line in kept.read_text().splitlines() if line.startswith("#SBATCH")]
    assert submitted == sbatch_lines(runs[0], size, after)
    assert ("#SBATCH --partition=gpu" in submitted) and ("#SBATCH --mail-type=END" in submitted)
    assert any(line.startswith("#SBATCH --array=0-1%") for line in submitted) == (size == 2)
