"""Developer and CI sessions: `nox -s rust tests` is the test command (see README)."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["rust", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Build the package (release) and run the Python test suite."""
    session.install("-v" if os.environ.get("CI") else "-q", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(venv_backend="none")
def rust(session: nox.Session) -> None:
    """Run the engine's Rust tests (graph, store, scheduler) without Python."""
    session.run("cargo", "test", "--locked", external=True)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the Python code; rustfmt and clippy (warnings are errors) on the Rust code."""
    session.install("ruff")
    session.run("ruff", "check", "python", "bench", "examples", "noxfile.py")
    session.run("ruff", "format", "--check", "python", "bench", "examples", "noxfile.py")
    session.run("cargo", "fmt", "--check", external=True)
    session.run(
        "cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings", external=True
    )


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on the package, and stubtest of the native module's stubs."""
    session.install(".", "mypy")
    session.run("mypy", "--strict", "python/cloacina")
    session.run("python", "-m", "mypy.stubtest", "cloacina._native")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against DBOS and the raw SQLite commit rate (release build)."""
    session.install(".", "dbos>=3.4,<3.5")
    session.run("python", "bench/run.py", *session.posargs)
