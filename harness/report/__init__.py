"""Paper-style reports from the run store: `python -m harness report RECIPE` writes reports/<name>.md,
reports/<name>.html, reports/index.html and figures under reports/figures/."""
