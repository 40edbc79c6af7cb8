"""`harness store migrate` on a store written by the release before identity version 2 (tests/fixtures/
store_v1, generated from that release by tests/fixtures/make_store_v1.py): every engine's runs are found
again, as done, under their new names, and nothing is lost."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.lifecycle import run_states
from harness.migrate import OLD_CONFIG, migrate_store
from harness.recipe import load_recipe
from harness.results import run_status
from tests.test_config_identity import V1_LOCAL_DEFAULTS

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1"
RECIPES = ("tiny", "down", "pre", "ssl_down")
OLD_RUNS = 8


@pytest.fixture
def store(tmp_path: Path) -> Path:
    shutil.copytree(FIXTURE, tmp_path / "store")
    return tmp_path / "store"


def _runs(store: Path) -> list:
    return [
        run
        for name in RECIPES
        for run in load_recipe(
            store / "recipes" / f"{name}.yaml", [f"runs_root={store / 'runs'}", *V1_LOCAL_DEFAULTS]
        )[1]
    ]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_dry_run_plans_every_run_and_writes_nothing(store):
    before = _files(store)
    lines: list[str] = []
    plan = migrate_store(store / "runs", dry_run=True, log=lines.append)
    assert len(plan.moves) == OLD_RUNS and not plan.left, lines
    assert _files(store) == before
    assert lines[-1] == f"would migrate {OLD_RUNS} run(s) in {store / 'runs'}; 0 left as they were"


def test_after_migrating_every_run_is_found_done_under_a_readable_name(store):
    runs = _runs(store)
    assert len(runs) == OLD_RUNS
    assert {state.state for state in run_states([run.folder for run in runs])} == {"not submitted"}
    results = sorted(p.read_bytes() for p in (store / "runs").glob("*/*/result.json"))

    migrate_store(store / "runs", dry_run=False, log=lambda line: None)

    runs = _runs(store)
    assert [state.state for state in run_states([run.folder for run in runs])] == ["done"] * OLD_RUNS
    for run in runs:
        assert run.folder.name == f"{run.rows[0]}-s{run.seed}-{run.uid}"
        assert (run.folder / OLD_CONFIG).is_file()  # the old config is kept
        assert run_status(run.folder).state == "done"
    assert sorted((run.folder / "result.json").read_bytes() for run in runs) == results
    downstream = next(run for run in runs if run.rows == ["ft-sar"])
    assert downstream.config.upstream.folder == str(downstream.upstream.folder)


def _harness(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True)


def test_the_command_migrates_and_status_shows_the_runs_done(store):
    missing = _harness("store", "migrate", "--root", str(store / "nowhere"))
    assert missing.returncode == 2 and "nowhere is not a folder" in missing.stderr
    migrated = _harness("store", "migrate", "--root", str(store / "runs"))
    assert migrated.returncode == 0 and f"migrated {OLD_RUNS} run(s)" in migrated.stdout, migrated.stderr
    shown = _harness(
        "status", str(store / "recipes" / "ssl_down.yaml"), f"runs_root={store / 'runs'}", *V1_LOCAL_DEFAULTS
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("done") >= 4, shown.stdout  # the probe, the Jaccard and their upstream


def test_a_second_migration_finds_nothing_to_do(store):
    migrate_store(store / "runs", dry_run=False, log=lambda line: None)
    after = _files(store)
    plan = migrate_store(store / "runs", dry_run=False, log=lambda line: None)
    assert not plan.moves and not plan.left and _files(store) == after


def test_what_cannot_be_mapped_is_listed_and_left_in_place(store):
    base = next(p for p in (store / "runs" / "tiny").iterdir() if "id: base" in _row_line(p))
    (base / "config.yaml").write_text("engine: [not, a, run\n")
    lines: list[str] = []
    plan = migrate_store(store / "runs", dry_run=False, log=lines.append)
    left = {folder.name: why for folder, why in plan.left}
    assert "config.yaml cannot be read" in left[base.name]
    evaluation = next(p for p in (store / "runs" / "down").iterdir() if "eval-base" in _row_line(p))
    assert f"its upstream run {base.name} is not migrated" in left[evaluation.name]
    assert base.is_dir() and evaluation.is_dir() and len(plan.moves) == OLD_RUNS - 2
    assert any(line.startswith(f"left tiny/{base.name}: ") for line in lines)


def _row_line(folder: Path) -> str:
    """The `row:` line of a run folder's config, as `id: <row>` (or the raw text if it has none)."""
    text = (folder / "config.yaml").read_text()
    row = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("row:")), "")
    return f"id: {row}" if row else text
