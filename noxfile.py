"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s docs`.

Every session installs with `constraints.txt`, the one file that pins every dependency: unpinned, pip
would pick the newest torch from the registry and download gigabytes. `tests` and `bench` share the
project's one environment, `.venv` (torch with its CUDA wheels: about 6 GB), which also runs the harness
(`. .venv/bin/activate`); `lint` and `docs` need no torch and keep small environments of their own.
"""

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"  # `nox -N` (or `--reuse-venv=no`) recreates the environments
ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", "constraints.txt")
INPUTS = ("constraints.txt", "pyproject.toml")  # the files that decide what an install puts in a venv
VENV = ROOT / ".venv"  # the project's one environment: `tests` and `bench` run in it, and so can you


def _digest(args: tuple[str, ...]) -> str:
    """A sha256 of everything that decides what an install puts in an environment."""
    files = [hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in INPUTS]
    return hashlib.sha256("\n".join([*files, *args]).encode()).hexdigest()


def _install_once(
    session: nox.Session, location: Path, args: tuple[str, ...], install: Callable[[], None]
) -> None:
    """Run `install` (which installs `args` into the environment at `location`) unless a stamp in it
    records the same constraints.txt, pyproject.toml and arguments; written after a successful install."""
    stamp = location / ".install-sha256"
    if stamp.is_file() and stamp.read_text() == _digest(args):
        session.log(f"{location.name}: constraints.txt, pyproject.toml and install arguments unchanged")
        return
    install()
    stamp.write_text(_digest(args))


def install(session: nox.Session, *args: str) -> None:
    """`session.install` under constraints.txt into the session's own environment, once (`_install_once`)."""
    args = (*CONSTRAINTS, *args)
    _install_once(session, Path(session.virtualenv.location), args, lambda: session.install(*args))


def project_env(session: nox.Session) -> dict[str, str]:
    """The project's one environment, `.venv` (created and installed with the `test` and `bench` extras
    when missing or when constraints.txt or pyproject.toml changed; pip then updates only what changed):
    the variables that run a command in it, as `. .venv/bin/activate` would."""
    args = (*CONSTRAINTS, "-e", ".[test,bench]")
    python = str(VENV / "bin" / "python")
    if not Path(python).exists():
        session.run_install(sys.executable, "-m", "venv", str(VENV), external=True)
    pip = (python, "-m", "pip", "install", "-q", *args)
    _install_once(session, VENV, args, lambda: session.run_install(*pip, external=True))
    return {"VIRTUAL_ENV": str(VENV), "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """The whole test suite on the CPU (GPU kernels run under TRITON_INTERPRET=1), in `.venv`."""
    env = project_env(session)
    session.run(str(VENV / "bin" / "python"), "-m", "pytest", *session.posargs, env=env, external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, with the same version everywhere."""
    install(session, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml) in build/site, built strict: a broken link, a page missing from
    the navigation or a docstring mkdocstrings cannot render fails it, and so does a public function of `sar`
    whose docstring does not name its arguments (docs/check_docstrings.py)."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # the `docs` extra's packages without the project: griffe reads `sar` from its source, so the ~6 GB of
    # torch and CUDA wheels that installing the project pulls are not needed to document it
    install(session, *pyproject["project"]["optional-dependencies"]["docs"])
    session.run("mkdocs", "build", "--strict", *session.posargs)
    session.run("python", "docs/check_docstrings.py")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Benchmarks, in `.venv`: prints figures and ratios against baselines measured in the same run, writes
    JSON."""
    env = project_env(session)
    session.run(str(VENV / "bin" / "python"), "-m", "benchmarks", *session.posargs, env=env, external=True)
