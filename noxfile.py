"""Developer and CI sessions: `nox -s rust tests` is the test command (see README)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "python" / "tests"))
import pg_server  # python/tests/pg_server.py: a throwaway PostgreSQL server (stdlib only)

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["rust", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Build the package (release) and run the Python test suite, on SQLite and on a
    throwaway PostgreSQL server (unless $CLOACINA_TEST_PG_URL names one)."""
    session.install("-v" if os.environ.get("CI") else "-q", ".[test]")
    with postgres_for_tests(session) as env:
        session.run("pytest", *session.posargs, env=env)


@contextlib.contextmanager
def postgres_for_tests(session: nox.Session) -> Iterator[dict[str, str]]:
    """The environment for pytest: $CLOACINA_TEST_PG_URL of a server started here and
    stopped (and removed) afterwards. When it cannot start: an error with $CI set, else a
    warning and the SQLite tests only."""
    if os.environ.get("CLOACINA_TEST_PG_URL"):
        yield {}
        return
    if "postgres" not in os.environ.get("CLOACINA_TEST_BACKENDS", "postgres"):
        yield {}
        return
    server = pg_server.PgServer()
    try:
        server.start()
        failure = None
    except (pg_server.PgUnavailable, OSError, subprocess.SubprocessError) as exc:
        failure = f"PostgreSQL could not be started: {exc}"
    if failure is not None:
        if os.environ.get("CI"):
            session.error(failure)
        session.warn(f"{failure}\nRunning the SQLite tests only.")
        yield {"CLOACINA_TEST_BACKENDS": os.environ.get("CLOACINA_TEST_BACKENDS", "sqlite")}
        return
    session.log(f"PostgreSQL at {server.url}, started in {server.startup_seconds:.2f} s")
    try:
        yield {"CLOACINA_TEST_PG_URL": server.url}
    finally:
        server.stop()


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


@nox.session
def bench_pg(session: nox.Session) -> None:
    """cloacina on PostgreSQL (release build) next to DBOS on the same server and pgbench's
    commit rate; starts its own durable server (fsync on) unless given --pg-url URL."""
    session.install(".", "dbos>=3.4,<3.5", "psycopg[binary]")
    session.run("python", "bench/postgres.py", *session.posargs)
