"""`python -m harness run|status|report|list`: the product's command line.

Heavy modules (torch, timm, Hydra) are imported by the commands that use them, so that `list` and
`--help` answer at once.
"""

import argparse
import functools
import math
import shlex
import shutil
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import PROJECT_DIR, RecipeError
from harness.processes import JobNotStopped
from harness.text import bounded

if TYPE_CHECKING:
    from harness.lifecycle import RunState
    from harness.pipeline import Node
    from harness.recipe import ResolvedRun

OVERRIDES_HELP = (
    "Hydra overrides: key=value, +key=value, ++key=value, ~key, key=null, key=[a,b], protocol=NAME"
)
SWEEPS_HELP = f"{OVERRIDES_HELP}; with -m, sweeps key=a,b or key=range(a,b)"
REPORTS_DIR = PROJECT_DIR / "reports"  # `report --out`'s default: in the project, as the run store's


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _resources(run: "ResolvedRun") -> str:
    r = run.row_config.resources
    return "CPU" if r.gpus_per_node == 0 else f"{r.nodes}x{r.gpus_per_node} GPU"


def _dataset(run: "ResolvedRun") -> str:
    d = run.row_config.data
    name = f"{d.dataset} (for {d.stands_for})" if d.stands_for else d.dataset
    return name if d.fraction == 1 else f"{name} x{d.fraction:g}"


def run_table(
    runs: list["ResolvedRun"],
    states: list["RunState"],
    with_estimate: bool,
    extra: dict[str, list[str]] | None = None,
) -> str:
    """One line per run; a `table` column when the runs span several tables (a pipeline), a `sweep` column
    for sweeps, and the `extra` columns (header -> one cell per run) after the state."""
    from harness.engines.spec import Progress, spec_of
    from harness.estimate import estimated_hours

    extra = extra or {}
    swept = any(run.sweeps for run in runs)
    tables = len({run.table for run in runs}) > 1
    headers = ["uid", *(["table"] if tables else []), "rows", *(["sweep"] if swept else []), "model"]
    headers += ["last block", "loss", "dataset", "epochs", "seed", "resources"]
    headers += [*(["estimate"] if with_estimate else []), "job", "state", *extra]
    rows = []
    for index, (run, state) in enumerate(zip(runs, states, strict=True)):
        c, spec = run.row_config, spec_of(run.row_config.engine)
        main_loss = spec.loss
        loss = f"{main_loss} + {c.loss.weight:g} L_{'tv' if c.loss.variant == 'tv' else 'se'}"
        loss = loss if c.loss.sar else main_loss
        cells = [
            run.uid,
            *([run.table] if tables else []),
            ",".join(run.rows),
            *([_sweeps(run)] if swept else []),
            c.model,
            c.last_block,
            loss,
            _dataset(run),
            f"{spec.length(c)} it." if spec.progress is Progress.iteration else str(c.epochs),
            str(run.seed),  # the run's own: the row's config holds its first seed
        ]
        cells.append(_resources(run))
        if with_estimate:
            kind, hours = estimated_hours(run)
            cells.append(f"{hours:.0f} {kind}-h" if kind == "GPU" else f"{hours:.2f} {kind}-h")
        cells += [state.job or "-", f"{state.state}: {state.detail}" if state.detail else state.state]
        rows.append([*cells, *(column[index] for column in extra.values())])
    return _table(headers, rows)


def graph_table(nodes: list["Node"]) -> str:
    """`--dry-run`'s table: every run of the pipeline, upstream first, with what `run` would do with it and,
    in a pipeline, what it would wait for."""
    from harness.pipeline import waits_for

    extra = {"plan": [n.action for n in nodes]}
    if any(n.upstream is not None for n in nodes):
        extra["waits for"] = [waits_for(n) for n in nodes]
    return run_table([n.run for n in nodes], [n.state for n in nodes], with_estimate=True, extra=extra)


def _dry_run_after(nodes: list["Node"]) -> dict[str, tuple[str, ...]]:
    """The jobs each launching run would wait for: a live upstream's job, or `job-of-UID` for an upstream
    that the same pass submits (its id is known once it is submitted)."""
    from harness.pipeline import LAUNCH, slurm_after

    after = slurm_after(nodes)
    for node in nodes:
        if node.action == LAUNCH and node.upstream is not None and node.upstream.action == LAUNCH:
            after[node.run.uid] = (f"job-of-{node.upstream.run.uid}",)
    return after


def dry_run_summary(nodes: list["Node"]) -> str:
    """What `--dry-run` adds below the run table: total estimated hours, whether each dataset root exists,
    and the #SBATCH lines of each Slurm job array that `run` would submit, upstream arrays first."""
    from harness.data import DatasetNotFoundError, check_available
    from harness.estimate import estimated_hours
    from harness.launch import launcher_name, sbatch_lines, slurm_arrays
    from harness.pipeline import LAUNCH
    from harness.recipe import datasets_of

    runs = [node.run for node in nodes]
    totals: dict[str, float] = {"GPU": 0.0, "CPU": 0.0}
    for run in runs:
        kind, hours = estimated_hours(run)
        totals[kind] += hours
    lines = [
        f"estimated total: {totals['GPU']:.0f} GPU-hours, {totals['CPU']:.2f} CPU-hours "
        "(from MACs at resources.assumed_tflops / assumed_cpu_gflops)",
        "datasets:",
    ]
    for dataset, root, key in dict.fromkeys(needed for r in runs for needed in datasets_of(r.config)):
        try:
            check_available(dataset, root, key)
            found = "generated in memory" if dataset == "synthetic" else "found"
        except DatasetNotFoundError as error:
            found = f"MISSING: {str(error).splitlines()[0]}"
        lines.append(f"  {dataset}{f' at {root}' if root else ''}: {found}")
    after = _dry_run_after(nodes)
    submitted = [n.run for n in nodes if n.action == LAUNCH and launcher_name(n.run) == "slurm"]
    for array in slurm_arrays(submitted, after):
        lines.append(f"Slurm job array of {len(array)} run(s): {', '.join(r.uid for r in array)}")
        lines += [f"  {line}" for line in sbatch_lines(array[0], len(array), after.get(array[0].uid, ()))]
    return "\n".join(lines)


def _load(args: argparse.Namespace):
    from harness.recipe import load_recipe

    flags = ["train.allow_code_change=true"] if getattr(args, "allow_code_change", False) else []
    recipe, runs = load_recipe(args.recipe, [*args.overrides, *flags], multirun=args.multirun)
    if args.rows is None:
        return recipe, runs
    from harness.rows import select_rows

    return select_rows(recipe, runs, args.rows, args.recipe)


def _sweeps(run: "ResolvedRun") -> str:
    return " | ".join(" ".join(point) for point in run.sweeps)


def print_configs(runs: list["ResolvedRun"]) -> None:
    """`--cfg`: each resolved run's config as YAML, headed by its uid, rows and seed."""
    from omegaconf import OmegaConf

    for run in runs:
        sweep = f", sweep {_sweeps(run)}" if run.sweeps else ""
        print(f"# run {run.uid}: rows {', '.join(run.rows)}, seed {run.seed}{sweep}")
        print(OmegaConf.to_yaml(run.config), end="")
        print("---")


def cmd_run(args: argparse.Namespace) -> int:
    from harness.data import DatasetNotFoundError, check_available
    from harness.estimate import beyond_a_year
    from harness.launch import launch
    from harness.lifecycle import cancel, read_submission
    from harness.pipeline import DONE, LAUNCH, LIVE, PipelineError, check, graph, plan, slurm_after
    from harness.recipe import datasets_of

    recipe, runs = _load(args)
    if args.cfg:
        print_configs(runs)
        return 0
    nodes = graph(runs)
    upstream = sum(not node.own for node in nodes)
    print(
        f"{recipe.title} [{recipe.scale} scale]: {len(runs)} run(s)"
        + (f", {upstream} upstream run(s) they consume" if upstream else "")
    )
    live = [node for node in nodes if node.own and node.state.live]
    if args.force and live and not args.cancel and not args.dry_run:
        for node in live:
            print(f"error: {node.name} is {node.state.state} as {node.state.job}", file=sys.stderr)
        print(
            "error: --force would train these again under a live job: add --cancel to stop it first",
            file=sys.stderr,
        )
        return 2
    plan(nodes, args.force, cancel=args.cancel)
    for node in nodes:
        if node.action == LAUNCH and (warning := beyond_a_year(node.run)):
            print(f"warning: {node.name}: {warning}", file=sys.stderr)
    if args.dry_run:
        print(graph_table(nodes))
        print(dry_run_summary(nodes))
        try:
            check(nodes)
            _check_launchable([node for node in nodes if node.action == LAUNCH], create=False)
        except (PipelineError, LaunchError) as error:
            print(f"`run` would stop before launching anything: {error}")
        return 0
    todo = [node for node in nodes if node.action == LAUNCH]
    try:
        check(nodes)  # a missing upstream checkpoint stops everything before anything is launched
        for node in todo:  # so does a missing dataset
            for dataset, root, key in datasets_of(node.run.row_config):
                check_available(dataset, root, key)
        _check_launchable(todo, create=True)  # and a launcher or a store that cannot be used
    except (PipelineError, DatasetNotFoundError, LaunchError) as error:
        print(f"error: {bounded(str(error))}", file=sys.stderr)
        return 2
    for node in live:
        if node.action == LAUNCH:  # --force --cancel
            cancel(read_submission(node.run.folder))
            print(f"cancelled {node.state.job} ({node.run.uid})")
    for node in nodes:
        if node.action == LIVE:
            print(f"{node.name} is {node.state.state} as {node.state.job}: not launched again")
    if not todo:
        print(f"every run of {args.recipe} is already done or live (use --force to train done runs again)")
        return 0
    for node in todo:
        if args.force and node.own:
            _forget(node.run.folder)
    upstream_todo = sum(not node.own for node in todo)
    of_them = f" ({upstream_todo} upstream)" if upstream_todo else ""
    kept = sum(node.action in (DONE, LIVE) for node in nodes)
    print(f"launching {len(todo)} run(s){of_them}; {kept} done or live", flush=True)
    failed = launch([n.run for n in todo], log=functools.partial(print, flush=True), after=slurm_after(nodes))
    if failed:
        print(f"{failed} run(s) failed: see `python -m harness status {args.recipe}`", file=sys.stderr)
    return 1 if failed else 0


class LaunchError(RuntimeError):
    """A run cannot be launched from here: no Slurm, or a folder it writes that cannot be written."""


def _check_launchable(nodes: list["Node"], create: bool) -> None:
    """Raise LaunchError, before anything is launched, if a Slurm run finds no sbatch here, or (with
    `create`: `run`, not `--dry-run`, which writes nothing) a run store or job folder cannot be written."""
    from harness.launch import launcher_name
    from harness.results import writable_problem

    slurm = [node.name for node in nodes if launcher_name(node.run) == "slurm"]
    if slurm and shutil.which("sbatch") is None:
        raise LaunchError(
            f"launcher=slurm, but this machine has no sbatch on its PATH ({len(slurm)} run(s), e.g. "
            f"{slurm[0]}): submit from a Slurm login node, or launch here with launcher=local"
        )
    if not create:
        return
    folders = {Path(n.run.config.runs_root) / n.run.table for n in nodes}
    folders |= {Path(n.run.config.launcher.folder) for n in nodes if launcher_name(n.run) != "inline"}
    for folder in sorted(folders):
        if problem := writable_problem(folder):
            raise LaunchError(f"{problem}: choose a run store with runs_root=... or $SAR_RUNS")


def _forget(folder: Path) -> None:
    """--force: the files that make a run done or resumable, and its failures, go; the run starts over."""
    from harness.results import CHECKPOINTS

    for name in ("result.json", *CHECKPOINTS.values(), "metrics.jsonl", "submitted.json"):
        (folder / name).unlink(missing_ok=True)
    for failure in folder.glob("failure*.json"):
        failure.unlink()


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from harness.pipeline import graph, upstream_state
    from harness.results import problems

    recipe, runs = _load(args)
    if args.cfg:
        print_configs(runs)
        return 0
    while True:  # once, or with --watch until no run is pending, running or requeued
        by_folder = {node.run.folder: node for node in graph(runs)}
        own = [by_folder[run.folder] for run in runs]  # in the recipe's order
        states = [node.state for node in own]
        if args.watch and sys.stdout.isatty():
            print("\033[2J\033[H", end="")  # clear the screen: the table is redrawn in place
        print(f"{recipe.title} [{recipe.scale} scale]")
        print(f"run store: {', '.join(sorted({str(Path(r.config.runs_root) / r.table) for r in runs}))}")
        consumes = any(node.upstream is not None for node in own)
        extra = {"upstream": [upstream_state(node) for node in own]} if consumes else None
        print(run_table(runs, states, with_estimate=False, extra=extra))
        for node in own:
            if node.state.logs and node.state.state != "done":
                print(f"{node.run.uid} {node.state.state}: logs in {node.state.logs}")
            for problem in problems(node.run.folder):  # broken files are listed, never fatal
                if problem not in node.state.detail:
                    print(f"{node.run.uid} broken file: {problem}")
        live = sum(state.live for state in states)
        if not args.watch or not live:
            return 0
        print(f"{live} run(s) live; refreshing every {args.every:g} s (Ctrl-C stops watching)", flush=True)
        try:
            time.sleep(args.every)
        except KeyboardInterrupt:
            return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.config import RECIPES_DIR, recipe_paths
    from harness.report.render import render_index, render_table
    from harness.results import writable_problem

    every = args.all is not None
    if every == (args.recipe is not None):
        also = f" (--all takes its overrides right after it: --all {args.recipe})" if every else ""
        print(f"error: give a recipe or --all, not both{also}", file=sys.stderr)
        return 2
    if every and args.rows:
        print("error: --rows selects rows of one table: give its recipe, not --all", file=sys.stderr)
        return 2
    if args.multirun:
        print(
            "error: a report shows one point of a sweep: give its values as plain overrides "
            "(e.g. report RECIPE loss.weight=0.1)",
            file=sys.stderr,
        )
        return 2
    recipes = recipe_paths(RECIPES_DIR) if every else [Path(args.recipe)]
    overrides = args.all if every else args.overrides
    out = args.out.resolve()
    if problem := writable_problem(out):
        print(f"error: --out: {problem}", file=sys.stderr)
        return 2
    for path in recipes:
        summary = render_table(path, overrides, out, args.tolerance, rows=args.rows)
        print(f"{out / summary['name']}.md, .html: {summary['done']}/{summary['runs']} run(s) done")
        if summary["pointer"]:  # no paper-scale run, but local-scale ones: say where they are reported
            print(f"  {summary['pointer']['text']} Report them with: {summary['pointer']['command']}")
    for problem in render_index(out):
        print(f"{out / 'index.html'} leaves out {problem}")
    print(f"{out / 'index.html'}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from harness.config import list_recipes

    if args.what == "engines":  # the registry imports the engines (torch): only when asked
        from harness.engines.spec import engines

        rows = [
            [s.name, s.consumes.value, s.progress.value, s.loss, ", ".join(s.metrics), s.description]
            for s in engines().values()
        ]
        print(_table(["engine", "consumes", "progress", "loss", "metrics", "what it does"], rows))
        return 0
    rows = [
        [str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path), reproduces]
        for path, _, reproduces in list_recipes()
    ]
    print(_table(["recipe", "reproduces"], rows))
    return 0


def cmd_store_migrate(args: argparse.Namespace) -> int:
    """Re-key a store written before identity version 2 (harness.migrate); deletes nothing."""
    from harness.config import runs_root
    from harness.migrate import migrate_store

    root = Path(runs_root(args.root))
    if not root.is_dir():
        raise RecipeError(f"--root: {root} is not a folder (the run store to migrate)")
    plan = migrate_store(root, args.dry_run, log=print)
    return 1 if plan.left else 0


def _seconds(text: str) -> float:
    """`status --every`: a finite number of seconds above 0 (0 would poll sacct in a tight loop)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, e.g. 10; got {text!r}")
    return seconds


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="a recipe file, e.g. recipes/table1.yaml")
    parser.add_argument("overrides", nargs="*", help=SWEEPS_HELP)
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="expand sweeps (key=a,b) into the product of runs"
    )
    parser.add_argument(
        "--cfg", action="store_true", help="print the resolved runs' configs as YAML and exit"
    )
    _rows_argument(parser)


def _rows_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows",
        type=_row_ids,
        metavar="ID,ID",
        help="only these rows of the table (e.g. --rows 1b/A,1b/F), with the baseline rows they are compared "
        "to and the upstream runs they consume",
    )


def _row_ids(text: str) -> list[str]:
    """`--rows a,b`: the row ids, each once, in the order given."""
    ids = [part.strip() for part in text.split(",")]
    if not all(ids):
        raise argparse.ArgumentTypeError(f"expected row ids separated by commas, e.g. 1b/A,1b/F: {text!r}")
    return list(dict.fromkeys(ids))


# Each subcommand's --help ends with these examples (tests/test_docs.py checks that each one parses).
EXAMPLES = {
    "run": """
  python -m harness run recipes/table1.yaml scale=local --dry-run   # the runs, their plan and estimate
  python -m harness run recipes/table1.yaml scale=local             # Tab. 1 on a CPU, synthetic data
  python -m harness run recipes/table2.yaml data.root=/datasets/imagenet launcher=slurm --rows vit-s-sar
""",
    "status": """
  python -m harness status recipes/table1.yaml scale=local          # once
  python -m harness status recipes/table2.yaml --watch --every 60   # redrawn until nothing is live
  python -m harness status recipes/table1.yaml scale=local --cfg    # the resolved configs, as YAML
""",
    "report": """
  python -m harness report recipes/table1.yaml scale=local          # reports/table1-local.{md,html}
  python -m harness report --all scale=local                        # every recipe, and reports/index.html
  python -m harness report recipes/table1.yaml scale=local --out /tmp/reports --tolerance 1
""",
    "list": """
  python -m harness list            # every recipe and the table it reproduces
  python -m harness list engines    # every engine: what it consumes, its loss and metrics
""",
    "store": """
  python -m harness store migrate --dry-run               # what would move where; writes nothing
  python -m harness store migrate --root /scratch/runs    # re-key that run store
""",
}
EXAMPLES["migrate"] = EXAMPLES["store"]


def _examples(name: str) -> dict:
    """The add_parser arguments that end `name`'s --help with its examples, laid out as written."""
    return {"epilog": f"examples:{EXAMPLES[name]}", "formatter_class": argparse.RawDescriptionHelpFormatter}


def version_text() -> str:
    """`--version`: the installed package's version and the git commit of the project folder, or
    "unknown commit" where that folder is not a git checkout (an installed wheel) or git is missing."""
    try:
        version = metadata.version("sar-vit")
    except metadata.PackageNotFoundError:
        version = "unknown version (not installed)"
    commit = "unknown commit"
    if (PROJECT_DIR / ".git").exists():  # not a parent folder's repository that happens to hold a venv
        try:
            git = ["git", "-C", str(PROJECT_DIR)]
            head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
            dirty = subprocess.run(
                [*git, "status", "--porcelain"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            head = None
        if head is not None and head.returncode == 0 and head.stdout.strip():
            modified = " with uncommitted changes" if dirty.returncode == 0 and dirty.stdout.strip() else ""
            commit = f"commit {head.stdout.strip()}{modified}"
    return f"sar-vit {version} ({commit})"


class _Version(argparse.Action):
    """`--version`, asking git only when given (argparse's own version action wants the text up front)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(version_text())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="Reproduce the SAR paper's tables."
    )
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="print the package version and the git commit, and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="validate a recipe, expand it into runs and launch those not done", **_examples("run")
    )
    _recipe_arguments(run)
    run.add_argument("--dry-run", action="store_true", help="print the run table; create nothing")
    run.add_argument("--force", action="store_true", help="train runs again even if they are done")
    run.add_argument(
        "--cancel", action="store_true", help="with --force: cancel the live jobs of those runs first"
    )
    run.add_argument(
        "--allow-code-change",
        action="store_true",
        help="resume runs that started on another commit (train.allow_code_change=true)",
    )
    run.set_defaults(func=cmd_run)
    status = sub.add_parser(
        "status", help="per run: done, running, failed (with the reason) or pending", **_examples("status")
    )
    _recipe_arguments(status)
    status.add_argument("--watch", action="store_true", help="refresh until no run is pending or running")
    status.add_argument(
        "--every",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds between --watch's refreshes, above 0 (default 10)",
    )
    status.set_defaults(func=cmd_status)
    report = sub.add_parser(
        "report", help="Markdown and HTML reports: ours beside the paper's numbers", **_examples("report")
    )
    report.add_argument("recipe", nargs="?", help="a recipe file, e.g. recipes/table1.yaml (or --all)")
    report.add_argument(
        "overrides", nargs="*", help=f"{OVERRIDES_HELP} (a report shows one point of a sweep: plain values)"
    )
    # -m is refused with the reason (a report shows one point of a sweep), and so not advertised
    report.add_argument("-m", "--multirun", action="store_true", help=argparse.SUPPRESS)
    report.add_argument(
        "--all",
        nargs="*",
        metavar="OVERRIDE",
        help="every recipe under recipes/, each with the overrides that follow (e.g. --all scale=local)",
    )
    _rows_argument(report)
    report.add_argument(
        "--out",
        type=Path,
        metavar="FOLDER",
        default=REPORTS_DIR,
        help="output folder (default: reports/ in the project, whatever folder the command runs from, as the "
        "run store's runs/; a relative --out, as a relative runs_root=..., is taken from the current folder)",
    )
    report.add_argument(
        "--tolerance", type=float, default=0.5, help="points from the paper's value (default 0.5)"
    )
    report.set_defaults(func=cmd_report)
    listing = sub.add_parser(
        "list", help="every recipe and what it reproduces, or every engine", **_examples("list")
    )
    listing.add_argument("what", nargs="?", choices=("recipes", "engines"), default="recipes")
    listing.set_defaults(func=cmd_list)
    store = sub.add_parser("store", help="maintain the run store", **_examples("store"))
    actions = store.add_subparsers(dest="action", required=True)
    migrate = actions.add_parser(
        "migrate",
        help="re-key runs stored before identity version 2 under their new names; deletes nothing",
        **_examples("migrate"),
    )
    migrate.add_argument("--root", help="the run store (default: $SAR_RUNS, else runs/ in the project)")
    migrate.add_argument("--dry-run", action="store_true", help="print what would move; write nothing")
    migrate.set_defaults(func=cmd_store_migrate)
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: `scale=local -m a=1,2`
    unknown = [item for item in extra if item.startswith("-") or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except RecipeError as error:
        print(f"error: {bounded(str(error))}", file=sys.stderr)
        return 2
    except JobNotStopped as error:
        print(f"error: {bounded(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM and SIGHUP while local jobs are waited for
        name = str(interrupt.args[0]) if interrupt.args else "SIGINT"
        command = "python -m harness " + shlex.join(sys.argv[1:] if argv is None else argv)
        again = f": resume with the same command ({command})" if args.command == "run" else ""
        print(f"interrupted ({name}){again}", file=sys.stderr)
        return 128 + getattr(signal.Signals, name, signal.SIGINT)
