"""A subset of a table's rows (`--rows a,b` of `run`, `status` and `report`): one cell of Tab. 1 without
the whole table or a hand-made recipe.

A selected row brings its baseline row (its gain, and at local scale its mCE, are measured against it);
the runs it consumes upstream come with its runs (`ResolvedRun.upstream`), as for a whole table."""

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from harness.config import RecipeError

if TYPE_CHECKING:
    from harness.recipe import ResolvedRun


def needed_rows(recipe: DictConfig, wanted: list[str], where: str | Path) -> list[str]:
    """The ids of the rows `wanted` and their baselines, in the recipe's order; a RecipeError names an
    unknown id, its close matches and the recipe's rows."""
    rows = {row.id: row for row in recipe.rows}
    unknown = [row_id for row_id in wanted if row_id not in rows]
    if unknown:
        close = {match for row_id in unknown for match in difflib.get_close_matches(row_id, rows, n=2)}
        hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
        raise RecipeError(
            f"{where}: --rows: no row has id {', '.join(map(repr, unknown))}{hint}; "
            f"the rows of {recipe.name}: {', '.join(rows)}"
        )
    needed = set(wanted)
    for row_id in wanted:
        while (baseline := rows[row_id].baseline) is not None and baseline not in needed:
            needed.add(baseline)
            row_id = baseline
    return [row_id for row_id in rows if row_id in needed]


def select_rows(
    recipe: DictConfig, runs: list["ResolvedRun"], wanted: list[str], where: str | Path
) -> tuple[DictConfig, list["ResolvedRun"]]:
    """The recipe with only the rows `wanted` and their baselines, its title saying so, and the runs that
    fill them (a run shared with a row left out is kept: it fills a selected row)."""
    kept = needed_rows(recipe, wanted, where)
    subset = recipe.copy()
    subset.rows = [row for row in recipe.rows if row.id in kept]
    added = [row_id for row_id in kept if row_id not in wanted]
    baselines = f" (+ baseline{'s' if len(added) > 1 else ''} {', '.join(added)})" if added else ""
    subset.title = f"{recipe.title} — a subset: rows {', '.join(wanted)}{baselines} of the {len(recipe.rows)}"
    return subset, [run for run in runs if set(run.rows) & set(kept)]
