"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s bench`.

Every session installs with `constraints.txt`, the one file that pins every dependency: unpinned, pip
would pick the newest torch from the registry and download gigabytes.
"""

import nox

nox.options.sessions = ["tests", "lint"]
CONSTRAINTS = ("-c", "constraints.txt")


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite on the CPU (GPU kernels run under TRITON_INTERPRET=1)."""
    session.install(*CONSTRAINTS, "-e", ".[test,bench]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff, with the same version everywhere."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: prints figures and ratios against baselines measured in the same run, writes JSON."""
    session.install(*CONSTRAINTS, "-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)
