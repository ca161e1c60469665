"""Developer tasks: `nox -s tests`, `lint`, `typecheck`, `bench`, `demo`, `notebook`, `docs`."""

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


#: The executed copy of the example notebook that the docs site renders (not committed).
EXECUTED_NOTEBOOK = ROOT / "docs" / "reproduce_qwen3_study.ipynb"


def run_notebook(session: nox.Session) -> None:
    # Offline, without keys, from a copy of examples/ alone; any cell error fails the session.
    session.run(
        "python",
        os.fspath(ROOT / ".ci" / "run_notebook.py"),
        "--output",
        os.fspath(EXECUTED_NOTEBOOK),
        env={"TRACEDISTILL_PROGRESS": "1"},
    )


@nox.session(python="3.11")
def notebook(session: nox.Session) -> None:
    """Execute examples/reproduce_qwen3_study.ipynb headless (offline, no keys) for the docs."""
    install(session)
    run_notebook(session)


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the user guide, the executed notebook and the API reference; warnings fail it."""
    install(session)
    session.install("mkdocs>=1.6", "mkdocstrings-python>=1.10", "mkdocs-jupyter>=0.25")
    if not EXECUTED_NOTEBOOK.is_file():
        run_notebook(session)
    session.run("mkdocs", "build", "--strict", "--site-dir", os.fspath(ROOT / "site"))
