"""The documentation does what it shows: README.md and docs/*.md, and the examples of `--help`.

- Every ```python block runs, a page's blocks in order in one namespace (a later block may use what an
  earlier one made, as a reader running them in turn would).
- Every `python -m harness ...` line of the other code blocks (bash, console, none) is checked without
  launching or writing anything: `run` with `--dry-run`, `status` with `--cfg`, `list` as written; `report`
  and `store` are parsed by the real command line, and `report`'s recipes and overrides loaded, since they
  would write files. The run store is an empty temporary folder (`SAR_RUNS`).
- A block shown but not run or checked (e.g. one that needs a cluster or a dataset) is marked by the HTML
  comment `<!-- no-run -->` on the line before its opening fence (blank lines between are allowed). Keep
  such marks rare: each is a claim nobody checks.
"""

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import cli
from harness.config import RECIPES_DIR

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = "<!-- no-run -->"
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)
SHELL = {"", "bash", "sh", "shell", "console", "text"}
COMMAND_END = {"|", "||", "&&", ";", ">", ">>", "&"}
REPORT = cli.cmd_report  # the real one: check_command replaces it in `cli`


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> Iterator[Block]:
    """The fenced code blocks of `page` not marked `<!-- no-run -->`, with their indentation removed."""
    text = page.read_text()
    for match in FENCE.finditer(text):
        if text[: match.start()].rstrip().endswith(NO_RUN):
            continue
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        yield Block(page, text.count("\n", 0, match.start()) + 1, match["lang"].lower(), body)


def commands(block: Block) -> Iterator[list[str]]:
    """The argument lists of the `python -m harness` commands of a shell block (continuation lines joined,
    comments, environment assignments before the command and anything after a pipe or `&&` dropped)."""
    for line in block.body.replace("\\\n", " ").splitlines():
        if (start := line.find("python -m harness")) < 0:
            continue
        words = shlex.split(line[start + len("python -m harness") :], comments=True)
        ends = [i for i, word in enumerate(words) if word in COMMAND_END]
        yield words[: ends[0]] if ends else words


def python_pages() -> list[Path]:
    return [page for page in PAGES if any(b.lang == "python" for b in blocks(page))]


def shell_commands() -> list:
    return [
        pytest.param(argv, id=f"{b.where} {' '.join(argv[:2])}", marks=_slow(argv))
        for page in PAGES
        for b in blocks(page)
        if b.lang in SHELL
        for argv in commands(b)
    ]


def help_examples() -> list:
    lines = [line for text in dict.fromkeys(cli.EXAMPLES.values()) for line in text.strip().splitlines()]
    argvs = [shlex.split(line, comments=True)[3:] for line in lines]  # after `python -m harness`
    return [pytest.param(argv, id=" ".join(argv), marks=_slow(argv)) for argv in argvs]


def _slow(argv: list[str]) -> list:
    """`report --all` loads every recipe (~15 s): a slow test."""
    return [pytest.mark.slow] if "--all" in argv else []


def run_python_blocks(page: Path) -> Iterator[tuple[Block, dict]]:
    """Run `page`'s Python blocks in order in one namespace, yielding it after each block."""
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.lang == "python":
            code = "\n" * (block.line) + block.body  # tracebacks point at the page's own lines
            exec(compile(code, str(page), "exec"), namespace)
            yield block, namespace


def _report_checked(args: argparse.Namespace) -> int:
    """`report` as far as it goes without writing: its recipes load with its overrides and rows."""
    if (args.all is not None) == (args.recipe is not None) or args.multirun:
        return REPORT(args)  # the usage errors, said as `report` says them (it writes nothing then)
    recipes = sorted(RECIPES_DIR.glob("*.yaml")) if args.all is not None else [Path(args.recipe)]
    for recipe in recipes:
        overrides = args.all if args.all is not None else args.overrides
        cli._load(argparse.Namespace(recipe=str(recipe), overrides=overrides, multirun=False, rows=args.rows))
    return 0


def check_command(argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """Run `python -m harness argv` in its checking form (see the module docstring); its exit status."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SAR_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(cli, "cmd_report", _report_checked)
    monkeypatch.setattr(cli, "cmd_store_migrate", lambda args: 0)  # parsed only: it needs a store
    argv = list(argv)
    if argv[:1] == ["run"] and "--dry-run" not in argv and "--cfg" not in argv:
        argv.append("--dry-run")
    if argv[:1] == ["status"] and "--cfg" not in argv:
        argv.append("--cfg")
    try:
        return cli.main(argv)
    except SystemExit as exit_:  # argparse: a usage error (2), or --help and --version (0)
        return exit_.code if isinstance(exit_.code, int) else 1


def test_pages_have_examples_to_check():
    """The collection itself works: a regression in the parsing above would silently check nothing."""
    assert python_pages(), "no ```python block found in README.md or docs/"
    assert shell_commands(), "no `python -m harness` command found in README.md or docs/"


def test_no_run_mark_skips_the_block_after_it(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 1\n```\n\n<!-- no-run -->\n\n```bash\npython -m harness run a.yaml\n```\n"
        "```bash\nSAR_RUNS=$(mktemp -d) python -m harness status b.yaml \\\n  scale=local  # note\n```\n"
    )
    found = list(blocks(page))
    assert [(b.lang, b.line) for b in found] == [("python", 1), ("bash", 10)]
    assert list(commands(found[1])) == [["status", "b.yaml", "scale=local"]]


def _attached_vit_trains(namespace: dict) -> None:
    assert namespace["S"].shape == (8, 3, 8, 8)
    assert all(p.grad is not None for p in namespace["model"].blocks[-1].attn.qkv.parameters())


def _sar_ready_model_trains(namespace: dict) -> None:
    assert namespace["S"].shape == (8, 6, 8, 8)
    assert namespace["model"].last_block == "sar"
    assert all(p.grad is not None for p in namespace["model"].parameters())


# What a page's Python blocks claim beyond running (their comments), checked after the block of that index
CLAIMS = {"README.md": {0: _attached_vit_trains, 1: _sar_ready_model_trains}}


@pytest.mark.slow
@pytest.mark.parametrize("page", python_pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_python_examples_run(page):
    claims = CLAIMS.get(str(page.relative_to(ROOT)), {})
    ran = 0
    for index, (_, namespace) in enumerate(run_python_blocks(page)):
        if index in claims:
            claims[index](namespace)
        ran += 1
    assert ran > max(claims, default=-1), f"{page.name} has fewer Python blocks than CLAIMS checks"


@pytest.mark.parametrize("argv", shell_commands())
def test_shown_commands_are_valid(argv, monkeypatch, tmp_path, capsys):
    code = check_command(argv, monkeypatch, tmp_path)
    out = capsys.readouterr()
    assert code == 0, f"python -m harness {shlex.join(argv)} -> {code}\n{out.out[-2000:]}{out.err}"


@pytest.mark.parametrize("argv", help_examples())
def test_help_examples_are_valid(argv, monkeypatch, tmp_path, capsys):
    code = check_command(argv, monkeypatch, tmp_path)
    out = capsys.readouterr()
    assert code == 0, f"python -m harness {shlex.join(argv)} -> {code}\n{out.out[-2000:]}{out.err}"
