"""Developer and CI sessions: `nox -s rust tests wheel` is the test command (see README)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "python" / "tests"))
import pg_server  # python/tests/pg_server.py: a throwaway PostgreSQL server (stdlib only)

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["rust", "tests", "wheel"]


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
    session.run("ruff", "check", "python", "bench", "examples", "docs", "noxfile.py")
    session.run("ruff", "format", "--check", "python", "bench", "examples", "docs", "noxfile.py")
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


# The wheel and the sdist go here; `nox -s wheel` replaces the cloacina files it finds.
DIST = Path(__file__).parent / "dist"


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the portable wheel (manylinux2014, abi3, linked by zig: no container) and the
    sdist into dist/; check the wheel's tag with auditwheel; install the wheel in fresh
    venvs with no Rust toolchain on PATH and the sdist in another, and run the quickstart
    and `cloacina --help` from each."""
    session.install("maturin>=1.8,<2", "ziglang", "auditwheel")
    DIST.mkdir(exist_ok=True)
    for old in DIST.glob("cloacina-*"):
        old.unlink()
    # libsqlite3-sys asks pkg-config for the system SQLite and passes its `-lsqlite3` on,
    # although the module reaches SQLite only through the function table of the library
    # Python's sqlite3 loaded. GNU ld drops the unused library, zig's linker refuses it:
    # without pkg-config, no link request is made and the module needs no libsqlite3.
    session.run(
        "maturin", "build", "--release", "--locked", "--zig", "--compatibility",
        "manylinux2014", "--interpreter", session_python(session), "--out", str(DIST),
        env={"SQLITE3_NO_PKG_CONFIG": "1"},
    )  # fmt: skip
    session.run("maturin", "sdist", "--out", str(DIST))
    (built,) = DIST.glob("cloacina-*.whl")
    (sdist,) = DIST.glob("cloacina-*.tar.gz")

    report = session.run("auditwheel", "show", str(built), silent=True) or ""
    tag = '"manylinux_2_17_x86_64"'
    if tag not in " ".join(report.split()) or "libsqlite3" in report:
        session.error(f"{built.name}: expected {tag} and no libsqlite3:\n{report}")
    session.log(f"{built.name}: auditwheel says {tag}, no libraries to graft")

    no_toolchain = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep)
        if not any((Path(d) / tool).exists() for tool in ("cargo", "rustc", "maturin"))
    )  # fmt: skip
    work = Path(session.create_tmp()).resolve()
    this = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for minor, python in {this: session_python(session), **other_pythons(this)}.items():
        try_installed(session, python, work / f"wheel-py{minor}", str(built), no_toolchain)
    try_installed(session, session_python(session), work / "sdist", str(sdist), None)


def session_python(session: nox.Session) -> str:
    """The interpreter of the session's virtualenv."""
    return str(Path(session.bin) / "python")


def other_pythons(this: str) -> dict[str, str]:
    """Interpreters of Python versions other than `this` (3.10 to 3.14), by minor version:
    pyenv's, else a `python3.X` on PATH (not a pyenv shim). The abi3 wheel must work on
    each."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    path = os.pathsep.join(
        d for d in os.environ["PATH"].split(os.pathsep) if Path(d).name != "shims"
    )
    found: dict[str, str] = {}
    for minor in (f"3.{n}" for n in range(10, 15)):
        pyenv = sorted(root.glob(f"{minor}.*/bin/python3"))
        python = str(pyenv[-1]) if pyenv else shutil.which(f"python{minor}", path=path)
        if minor != this and python:
            found[minor] = python
    return found


def try_installed(
    session: nox.Session, python: str, venv: Path, package: str, path: str | None
) -> None:
    """Install `package` (a wheel or an sdist) in a fresh venv made by `python`, then run
    the quickstart and `cloacina --help` from that venv in an empty directory. With
    `path`, the commands run with that PATH (one without a Rust toolchain)."""
    session.run(python, "-m", "venv", "--clear", str(venv), external=True)
    bin_dir = venv / "bin"
    env = {"CARGO_TARGET_DIR": str(Path(__file__).parent / "target")}
    if path is not None:
        env = {"PATH": f"{bin_dir}{os.pathsep}{path}"}
        for tool in ("cargo", "rustc"):
            if shutil.which(tool, path=env["PATH"]):
                session.error(f"{tool} is still on PATH: the wheel test would prove nothing")
    quiet = [] if os.environ.get("CI") else ["-q"]
    session.run(
        str(bin_dir / "pip"), "install", *quiet, "--no-cache-dir", package, env=env,
        external=True,
    )  # fmt: skip
    run_dir = venv / "run"
    run_dir.mkdir()
    example = Path(__file__).parent / "examples" / "quickstart.py"
    with session.chdir(run_dir):
        session.run(str(bin_dir / "python"), str(example), env=env, external=True)
        session.run(str(bin_dir / "cloacina"), "--help", env=env, external=True, silent=True)
        session.run(str(bin_dir / "cloacina"), "runs", "list", "--db", "sqlite:///quickstart.db",
                    env=env, external=True)  # fmt: skip


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
