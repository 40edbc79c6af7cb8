"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s docs`.

Every session installs with `constraints.txt`, the one file that pins every dependency: unpinned, pip
would pick the newest torch from the registry and download gigabytes.
"""

import hashlib
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_venv = "yes"  # `nox -N` (or `--reuse-venv=no`) recreates the environments
ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", "constraints.txt")
INPUTS = ("constraints.txt", "pyproject.toml")  # the files that decide what an install puts in a venv


def install(session: nox.Session, *args: str) -> None:
    """`session.install` under constraints.txt, skipped when this environment already has exactly it.

    The tests environment is ~6 GB (torch pulls CUDA wheels) and pip takes minutes to install it, so nox
    reuses the environment and a stamp inside it records a sha256 of everything that decides the install:
    constraints.txt, pyproject.toml and the arguments. The stamp is written only after a successful install.
    """
    args = (*CONSTRAINTS, *args)
    files = [hashlib.sha256((ROOT / name).read_bytes()).hexdigest() for name in INPUTS]
    digest = hashlib.sha256("\n".join([*files, *args]).encode()).hexdigest()
    stamp = Path(session.virtualenv.location, ".install-sha256")
    if stamp.is_file() and stamp.read_text() == digest:
        session.log("constraints.txt, pyproject.toml and install arguments unchanged: install skipped")
        return
    session.install(*args)
    stamp.write_text(digest)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite on the CPU (GPU kernels run under TRITON_INTERPRET=1)."""
    install(session, "-e", ".[test,bench]")
    session.run("pytest", *session.posargs)


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


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: prints figures and ratios against baselines measured in the same run, writes JSON."""
    install(session, "-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
