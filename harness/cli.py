"""`python -m harness run|status|list`: the product's command line."""

import argparse
import sys
from pathlib import Path

from harness.recipe import RecipeError, ResolvedRun, list_recipes, load_recipe
from harness.results import run_status


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _resources(run: ResolvedRun) -> str:
    r = run.row_config.resources
    return "CPU" if r.gpus_per_node == 0 else f"{r.nodes}x{r.gpus_per_node} GPU"


def _dataset(run: ResolvedRun) -> str:
    d = run.row_config.data
    name = f"{d.dataset} (for {d.stands_for})" if d.stands_for else d.dataset
    return name if d.fraction == 1 else f"{name} x{d.fraction:g}"


def _state(run: ResolvedRun) -> str:
    status = run_status(run.folder)
    return f"{status.state}: {status.detail}" if status.detail else status.state


def run_table(runs: list[ResolvedRun], with_estimate: bool) -> str:
    from harness.estimate import gpu_hours

    headers = ["uid", "rows", "model", "last block", "loss", "dataset", "epochs", "seed", "resources"]
    headers += ["est. GPU-h", "state"] if with_estimate else ["state"]
    rows = []
    for run in runs:
        c = run.row_config
        loss = f"+ {c.loss.weight:g} L_{'tv' if c.loss.variant == 'tv' else 'se'}" if c.loss.sar else "ce"
        cells = [
            run.uid,
            ",".join(run.rows),
            c.model,
            c.last_block,
            loss,
            _dataset(run),
            str(c.epochs),
            str(c.seed),
        ]
        cells.append(_resources(run))
        if with_estimate:
            cells.append(f"{gpu_hours(run):.0f}")
        rows.append([*cells, _state(run)])
    return _table(headers, rows)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.data import DatasetNotFoundError, check_available
    from harness.launch import launch

    recipe, runs = load_recipe(args.recipe, args.overrides)
    print(f"{recipe.title} [{recipe.scale} scale]: {len(runs)} run(s)")
    if args.dry_run:
        print(run_table(runs, with_estimate=True))
        return 0
    todo = runs if args.force else [r for r in runs if run_status(r.folder).state != "done"]
    if not todo:
        print(f"every run of {args.recipe} is already done (use --force to train them again)")
        return 0
    for run in todo:  # a missing dataset stops everything before anything is launched
        try:
            check_available(run.row_config.data.dataset, run.row_config.data.root)
        except DatasetNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.force:
        for run in todo:
            folder = run.folder
            for name in ("result.json", "checkpoint.pt", "metrics.jsonl", "failure.json"):
                (folder / name).unlink(missing_ok=True)
    print(f"launching {len(todo)} run(s); {len(runs) - len(todo)} already done", flush=True)
    failed = launch(todo, log=lambda line: print(line, flush=True))
    if failed:
        print(f"{failed} run(s) failed: see `python -m harness status {args.recipe}`", file=sys.stderr)
    return 1 if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    recipe, runs = load_recipe(args.recipe, args.overrides)
    print(f"{recipe.title} [{recipe.scale} scale]")
    print(run_table(runs, with_estimate=False))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.recipe import RECIPES_DIR
    from harness.report.render import render_index, render_table

    if args.all and args.recipe and "=" in args.recipe:  # `report --all scale=local`: no recipe, overrides
        args.overrides, args.recipe = [args.recipe, *args.overrides], None
    if args.all == (args.recipe is not None):
        print("error: give a recipe or --all", file=sys.stderr)
        return 2
    recipes = sorted(RECIPES_DIR.glob("*.yaml")) if args.all else [Path(args.recipe)]
    out = Path(args.out)
    for path in recipes:
        summary = render_table(path, args.overrides, out, args.tolerance)
        print(f"{out / summary['name']}.md, .html: {summary['done']}/{summary['runs']} run(s) done")
    render_index(out)
    print(f"{out / 'index.html'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    rows = [
        [str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path), reproduces]
        for path, _, reproduces in list_recipes()
    ]
    print(_table(["recipe", "reproduces"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="Reproduce the SAR paper's tables."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="validate a recipe, expand it into runs and launch those not done")
    run.add_argument("recipe")
    run.add_argument("overrides", nargs="*", help="key=value, e.g. scale=local seeds=[0,1,2] launcher=slurm")
    run.add_argument("--dry-run", action="store_true", help="print the run table; create nothing")
    run.add_argument("--force", action="store_true", help="train runs again even if they are done")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="per run: done, running, failed (with the reason) or pending")
    status.add_argument("recipe")
    status.add_argument("overrides", nargs="*")
    status.set_defaults(func=cmd_status)
    report = sub.add_parser("report", help="Markdown and HTML reports: ours beside the paper's numbers")
    report.add_argument("recipe", nargs="?")
    report.add_argument("overrides", nargs="*")
    report.add_argument("--all", action="store_true", help="every recipe under recipes/")
    report.add_argument("--out", default="reports", help="output folder (default: reports)")
    report.add_argument(
        "--tolerance", type=float, default=0.5, help="points from the paper's value (default 0.5)"
    )
    report.set_defaults(func=cmd_report)
    sub.add_parser("list", help="every recipe and what it reproduces").set_defaults(func=cmd_list)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except RecipeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
