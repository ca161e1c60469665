"""Developer tasks: `nox -s tests`, `lint`, `typecheck`, `bench`, `demo`, `docs`."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
ALL = ".[local,plot,dev]"


def install(session: nox.Session, spec: str = ALL) -> None:
    session.install("--upgrade", "pip")
    session.install("-e", spec)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Run the whole test suite (slow end-to-end tests included); extra args go to pytest."""
    install(session)
    setup = ROOT / "tests" / "servers" / "setup_tinker_server.sh"
    if setup.exists():
        # The self-hosted Tinker-compatible server lives in its own venv (see the script).
        session.run("bash", str(setup), external=True)
    session.run("python", "-m", "pytest", *session.posargs, env={"TRACEDISTILL_PROGRESS": "0"})


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict."""
    install(session)
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Run every benchmark in benchmarks/ (`nox -s bench -- --quick` for a short smoke run)."""
    install(session)
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.log(f"== {script.name}")
        session.run("python", str(script), *session.posargs)


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """Run the embedded offline default end to end."""
    install(session, ".[local,plot]")
    session.run("python", "-m", "tracedistill", "demo", *session.posargs)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the user guide and API reference; any warning fails the build."""
    install(session)
    session.install("mkdocs>=1.6", "mkdocstrings-python>=1.10")
    session.run("mkdocs", "build", "--strict", "--site-dir", os.fspath(ROOT / "site"))
