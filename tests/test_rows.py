"""A subset of a table's rows (`--rows`): `run`, `--dry-run`, `status` and `report` take only the rows
named, with their baselines and the upstream runs they consume; an unknown id is refused naming the rows."""

from pathlib import Path

import pytest

from harness.cli import main
from harness.config import RECIPES_DIR, RecipeError
from harness.recipe import load_recipe
from harness.rows import needed_rows, select_rows
from tests.harness_fixtures import TINY_OVERRIDES, write_tiny
from tests.test_pipeline import finetune_row, write_downstream, write_upstream


def test_a_row_brings_its_baseline_in_the_recipes_order():
    recipe, runs = load_recipe(RECIPES_DIR / "table1.yaml", ["scale=local"])
    assert needed_rows(recipe, ["1b/F", "1a/0.01"], "table1") == ["1a/0.01", "1b/A", "1b/F"]
    subset, kept = select_rows(recipe, runs, ["1b/F"], "table1")
    assert [row.id for row in subset.rows] == ["1b/A", "1b/F"] and len(recipe.rows) == 16
    assert subset.title.endswith("a subset: rows 1b/F (+ baseline 1b/A) of the 16")
    # the runs that fill them, those shared with other rows (1b/F is 1a/0.01's run) included, each seed
    assert {tuple(run.rows) for run in kept} == {("1a/0.01", "1b/F", "1c/sar-100"), ("1b/A", "1c/vit-100")}
    assert len(kept) == 2 * 3


def test_an_unknown_row_is_refused_naming_the_rows(tmp_path, capsys):
    tiny = write_tiny(tmp_path, tmp_path / "runs")
    with pytest.raises(RecipeError, match=r"--rows: no row has id 'bsae' \(did you mean base\?\); the rows"):
        select_rows(*load_recipe(tiny, TINY_OVERRIDES), ["bsae"], tiny)
    for command in (["run", "--dry-run"], ["status"], ["report", "--out", str(tmp_path / "reports")]):
        assert main([command[0], str(tiny), *TINY_OVERRIDES, "--rows", "base,nope", *command[1:]]) == 2
        assert "no row has id 'nope'; the rows of tiny: base, sar" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("rows", ["", "base,", ",base"])
def test_rows_must_be_ids_separated_by_commas(tmp_path, capsys, rows):
    with pytest.raises(SystemExit) as exit_:
        main(["status", str(write_tiny(tmp_path, tmp_path / "runs")), "--rows", rows])
    assert exit_.value.code == 2 and "expected row ids separated by commas" in capsys.readouterr().err


def test_dry_run_of_a_downstream_row_keeps_the_upstream_run_it_consumes(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_upstream(tmp_path, runs)
    rows = [finetune_row("ft-base", "tiny.yaml", "base"), finetune_row("ft-sar", "tiny.yaml", "sar")]
    down = write_downstream(tmp_path, runs, rows)
    assert main(["run", str(down), "--rows", "ft-sar", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 run(s), 1 upstream run(s) they consume" in out
    table = out.split("estimated total")[0]
    assert " sar " in table and " ft-sar " in table and " base " not in table and "ft-base" not in table
    assert not runs.exists()


@pytest.mark.slow
def test_run_status_and_report_of_one_row(tmp_path, capsys):
    tiny = write_tiny(tmp_path, tmp_path / "runs")
    out = tmp_path / "reports"
    assert main(["run", str(tiny), *TINY_OVERRIDES, "--rows", "base"]) == 0
    said = capsys.readouterr().out
    assert "a subset: rows base of the 2 [paper scale]: 1 run(s)" in said and "launching 1 run(s)" in said
    _, (base, sar) = load_recipe(tiny, TINY_OVERRIDES)
    assert (base.folder / "result.json").is_file() and not sar.folder.exists()
    assert main(["status", str(tiny), *TINY_OVERRIDES, "--rows", "base"]) == 0
    status = capsys.readouterr().out
    assert base.uid in status and "done" in status and sar.uid not in status
    assert main(["status", str(tiny), *TINY_OVERRIDES]) == 0
    assert sar.uid in capsys.readouterr().out  # the whole table, the other row not trained
    assert main(["report", str(tiny), *TINY_OVERRIDES, "--rows", "base", "--out", str(out)]) == 0
    assert f"{out / 'tiny-rows-base.md'}, .html: 1/1 run(s) done" in capsys.readouterr().out
    report = (out / "tiny-rows-base.md").read_text()
    assert report.startswith("# Tiny: a test table — a subset: rows base of the 2\n")
    assert "| ViT-T |" in report and "ViT-T + SAR" not in report and not (out / "tiny.md").exists()
    assert "a subset: rows base of the 2" in (out / "index.html").read_text()


def test_the_report_of_a_sar_row_shows_its_gain_over_its_baseline(tmp_path, capsys):
    tiny = write_tiny(tmp_path, tmp_path / "runs")
    assert main(["run", str(tiny), *TINY_OVERRIDES, "--rows", "sar", "--dry-run"]) == 0
    assert "rows sar (+ baseline base) of the 2 [paper scale]: 2 run(s)" in capsys.readouterr().out
    out = tmp_path / "reports"
    assert main(["report", str(tiny), *TINY_OVERRIDES, "--rows", "sar", "--out", str(out)]) == 0
    report = Path(out / "tiny-rows-sar.md").read_text()
    assert "| ViT-T |" in report and "| ViT-T + SAR |" in report  # the baseline's row, both not run
