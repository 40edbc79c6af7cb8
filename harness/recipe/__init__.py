"""Validate a recipe and expand it into fully resolved runs (rows x seeds x sweep points), each with a
stable uid (harness.config.identity), split by job: `load` (composition and resolution), `validate`,
`local` (scale=local), `upstream` (runs that consume runs), `run` (the resolved run and its folder).

Nothing here launches or writes anything: every error is raised before a run folder exists, and names the
file or the override, the key and what was expected.
"""

from harness.recipe.load import load_recipe
from harness.recipe.run import ResolvedRun, datasets_of

__all__ = ["ResolvedRun", "datasets_of", "load_recipe"]
