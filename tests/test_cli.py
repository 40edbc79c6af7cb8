"""The command line's own arguments: `status --every`, `report --out`, `report --all OVERRIDES` and what
`report --help` offers."""

import re
from pathlib import Path

import pytest

from harness import cli, config
from harness.cli import main
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny(tmp_path, tmp_path / "runs")


@pytest.mark.parametrize("every", ["0", "-1", "nan", "inf", "ten"])
def test_status_every_must_be_seconds_above_zero(tiny, capsys, every):
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(tiny), *TINY_OVERRIDES, "--watch", "--every", every])
    assert exit_.value.code == 2
    assert f"argument --every: expected a number of seconds above 0, e.g. 10; got '{every}'" in (
        capsys.readouterr().err
    )


def test_status_every_takes_a_fraction_of_a_second(tiny, capsys):
    assert main(["status", str(tiny), *TINY_OVERRIDES, "--watch", "--every", "0.5"]) == 0
    assert "not submitted" in capsys.readouterr().out  # nothing live: no refresh


def test_report_out_is_in_the_project_by_default_and_relative_to_the_current_folder_when_given(
    tiny, tmp_path, monkeypatch, capsys
):
    assert config.PROJECT_DIR / "reports" == cli.REPORTS_DIR
    monkeypatch.setattr(cli, "REPORTS_DIR", tmp_path / "project" / "reports")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", str(tiny), *TINY_OVERRIDES]) == 0
    assert (tmp_path / "project" / "reports" / "tiny.md").is_file() and not (elsewhere / "reports").exists()
    assert f"{tmp_path / 'project' / 'reports' / 'index.html'}" in capsys.readouterr().out
    assert main(["report", str(tiny), *TINY_OVERRIDES, "--out", "mine"]) == 0
    assert (elsewhere / "mine" / "tiny.md").is_file()
    assert f"{elsewhere / 'mine' / 'tiny.md'}, .html" in capsys.readouterr().out  # said as an absolute path


def test_report_help_offers_no_sweep(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    out = capsys.readouterr().out.replace("python -m harness", "harness")
    assert exit_.value.code == 0 and "-m" not in out and "sweeps" not in out
    assert "--all [OVERRIDE ...]" in out and "reports/ in the project" in out


def test_report_refuses_a_sweep_saying_why(tiny, capsys):
    assert main(["report", str(tiny), *TINY_OVERRIDES, "-m", "loss.weight=0.1,0.2"]) == 2
    assert "a report shows one point of a sweep" in capsys.readouterr().err


def test_report_all_takes_the_overrides_that_follow_it(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "RECIPES_DIR", tiny.parent)  # --all: every recipe there, the tiny one
    out = tmp_path / "reports"
    assert main(["report", "--all", *TINY_OVERRIDES, "scale=local", "--out", str(out)]) == 0
    assert (out / "tiny-local.md").is_file() and not (out / "tiny.md").exists()
    assert main(["report", "--out", str(out), "--all", *TINY_OVERRIDES]) == 0
    assert (out / "tiny.md").is_file()
    capsys.readouterr()
    assert main(["report", "--all", "--out", str(out), "scale=local"]) == 2
    err = capsys.readouterr().err
    assert "not both (--all takes its overrides right after it: --all scale=local)" in err
    assert main(["report", str(tiny), "--all"]) == 2
    assert main(["report", "--all", "--rows", "base"]) == 2
    assert "--rows selects rows of one table: give its recipe, not --all" in capsys.readouterr().err


def test_the_run_table_shows_each_runs_own_seed(tiny, capsys):
    assert main(["run", str(tiny), *TINY_OVERRIDES, "seeds=[0,7]", "--dry-run"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if "sar_vit_tiny" in line]
    seeds = sorted(line[line.index("synthetic") + 2] for line in lines)  # dataset, epochs, seed
    assert seeds == ["0", "0", "7", "7"]


@pytest.mark.parametrize(
    "command", [["run"], ["status"], ["report"], ["list"], ["store"], ["store", "migrate"]]
)
def test_each_help_ends_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    examples = help_text.split("\nexamples:\n")[1].strip().splitlines()
    assert 2 <= len(examples) <= 3
    assert all(line.strip().startswith(f"python -m harness {command[0]} ") for line in examples)
    assert help_text.rstrip().endswith(examples[-1])  # laid out as written, last in the help


def test_version_says_the_package_version_and_the_commit(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    out = capsys.readouterr().out.strip()
    assert exit_.value.code == 0
    version = re.escape(metadata.version("sar-vit"))
    assert re.fullmatch(rf"sar-vit {version} \(commit [0-9a-f]{{40}}( with uncommitted changes)?\)", out), out


def test_version_outside_a_checkout_says_unknown_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "PROJECT_DIR", tmp_path)  # an installed package: no .git beside it
    assert cli.version_text().endswith("(unknown commit)")
    (tmp_path / ".git").mkdir()  # a .git folder git cannot read
    assert cli.version_text().endswith("(unknown commit)")


def test_version_without_git_or_an_installed_package(monkeypatch):
    from importlib import metadata

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.subprocess, "run", no_git)
    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.version_text() == "sar-vit unknown version (not installed) (unknown commit)"
