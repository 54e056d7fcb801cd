"""Shared fixtures: a fresh database per test on each backend, a runner on it, and ways to
look inside.

Backends: every test that uses `db_url` (so also `runner`, `rows`, `make_db_url`,
`db_exists`) runs once per backend, with the ids `[sqlite]` and `[postgres]`:

- sqlite: a new file `<tmp_path>/test.db` (`db_path`);
- postgres: a new schema `t_<random hex>` on the server `$CLOACINA_TEST_PG_URL`, named in
  the URL by libpq's `options=-csearch_path%3D<schema>`; the backend creates and migrates it
  on first use; it is dropped (CASCADE) after the test. Without `$CLOACINA_TEST_PG_URL` the
  postgres variants are skipped, and fail when `$CI` is set. `nox -s tests` starts a
  throwaway server (pg_server.py); by hand: `python python/tests/pg_server.py -- pytest`.

`--backends sqlite,postgres` or `$CLOACINA_TEST_BACKENDS` chooses (default: both); the
other variants are deselected. Each variant carries the marker of its backend, so
`-m "not postgres"` runs the SQLite half and the tests that need no database.

A test about PostgreSQL itself (durability/test_pg_*.py: several processes and servers)
is marked `@pytest.mark.postgres` and requests `pg_server_url`: it is selected, skipped or
failed as the postgres variants are.

`@pytest.mark.sqlite_only("why")` keeps a test on SQLite: it is about the file itself
(sqlite3 sharing it, WAL, permissions, old files, `:memory:`, file paths). A test that
requests `db_path` must say so with this marker.

The engine's task registry is global to the process. Tests define their tasks inside the
test function, so a later test that reuses an id simply replaces the earlier definition
(which the engine supports, as a notebook re-running a cell would).
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from pathlib import Path

import pytest

# The test modules import helpers.py from this folder whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from cloacina import Runner
from helpers import pg_drop_schema, pg_query, pg_schema_exists, query, schema_of, with_schema

BACKENDS = ("sqlite", "postgres")
PG_URL_ENV = "CLOACINA_TEST_PG_URL"
NO_PG_URL = (
    f"PostgreSQL tests need ${PG_URL_ENV} (a server URL; `nox -s tests` starts one, or run "
    "`python python/tests/pg_server.py -- pytest ...`)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=None,
        help="database backends to test, comma-separated: sqlite,postgres "
        "(default: $CLOACINA_TEST_BACKENDS, else both)",
    )


def selected_backends(config: pytest.Config) -> tuple[str, ...]:
    raw = config.getoption("--backends") or os.environ.get("CLOACINA_TEST_BACKENDS") or ""
    chosen = tuple(b.strip() for b in raw.split(",") if b.strip()) or BACKENDS
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {unknown}; choose from {list(BACKENDS)}")
    return chosen


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): the test is about SQLite itself; it never runs on PostgreSQL",
    )
    config.addinivalue_line("markers", "sqlite: the test's SQLite variant (set by conftest)")
    config.addinivalue_line(
        "markers",
        "postgres: the test's PostgreSQL variant (set by conftest), or a test about "
        "PostgreSQL only (deselected with the PostgreSQL variants)",
    )
    config.addinivalue_line(
        "markers",
        "rewrites_stored_rows: the test changes a run's stored rows behind its runner's back, "
        "so the run its waiter gets (as the runner committed it) and the database differ",
    )
    selected_backends(config)  # a bad value fails at once


def _mask(url: str) -> str:
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def pytest_report_header(config: pytest.Config) -> str:
    backends = selected_backends(config)
    line = "cloacina backends: " + ", ".join(backends)
    if "postgres" in backends:
        url = os.environ.get(PG_URL_ENV)
        line += f" (postgres at {_mask(url)})" if url else f" (postgres: ${PG_URL_ENV} not set)"
    return line


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
    if "db_path" in metafunc.fixturenames and not sqlite_only:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} requests db_path, a SQLite file: use rows/db_url, "
            'or mark it @pytest.mark.sqlite_only("why")'
        )
    params = ["sqlite"] if sqlite_only else list(BACKENDS)
    metafunc.parametrize(
        "backend",
        [pytest.param(b, marks=getattr(pytest.mark, b), id=b) for b in params],
        indirect=True,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    backends = selected_backends(config)
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        backend = params.params.get("backend") if params else None
        if backend is None and item.get_closest_marker("sqlite_only"):
            backend = "sqlite"
        elif backend is None and item.get_closest_marker("postgres"):
            backend = "postgres"  # a PostgreSQL-only test (durability/test_pg_*.py)
        (keep if backend is None or backend in backends else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if os.environ.get(PG_URL_ENV):
        return
    pg_items = [item for item in keep if item.get_closest_marker("postgres")]
    if pg_items and os.environ.get("CI"):
        raise pytest.UsageError(f"$CI is set and PostgreSQL is not available: {NO_PG_URL}")
    for item in pg_items:  # a skip mark: -ra folds these into one line per file
        item.add_marker(pytest.mark.skip(reason=NO_PG_URL))


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The PostgreSQL server's URL (no schema): skips, or fails when $CI is set, without it."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(NO_PG_URL, pytrace=False)
        pytest.skip(NO_PG_URL)
    return url


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgres' (parametrized by pytest_generate_tests): for the rare test
    that must look at each backend differently."""
    return request.param


@pytest.fixture
def make_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    """make_db_url(name) -> the URL of another new database on the test's backend: SQLite,
    the file <tmp_path>/<name>.db; PostgreSQL, a new schema (dropped after the test)."""
    schemas: list[str] = []
    server = request.getfixturevalue("pg_server_url") if backend == "postgres" else None

    def make(name: str) -> str:
        if server is None:
            return "sqlite:///" + str(tmp_path / f"{name}.db")  # absolute: four slashes
        schema = "t_" + secrets.token_hex(8)
        schemas.append(schema)
        return with_schema(server, schema)

    yield make
    for schema in schemas:
        pg_drop_schema(server, schema)


@pytest.fixture
def db_url(make_db_url) -> str:
    # SQLite: "sqlite:////tmp/.../test.db" (db_path); PostgreSQL: a new schema.
    return make_db_url("test")


@pytest.fixture
def db_path(backend: str, tmp_path: Path) -> Path:
    """The SQLite file of db_url (tests asking for it are marked sqlite_only)."""
    assert backend == "sqlite", "db_path is a SQLite file"
    return tmp_path / "test.db"


@pytest.fixture
def runner(db_url: str):
    r = Runner(db_url, max_concurrency=4)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def rows(backend: str, db_url: str, tmp_path: Path):
    """rows(sql, *params) -> list of dict rows read from the test's database (`?`
    placeholders on both backends): Python's sqlite3 on the file, psycopg on the schema."""
    if backend == "sqlite":
        path = tmp_path / "test.db"

        def fetch(sql: str, *params):
            return query(path, sql, params)

    else:

        def fetch(sql: str, *params):
            return pg_query(db_url, sql, params)

    return fetch


@pytest.fixture
def db_exists(backend: str, db_url: str, tmp_path: Path):
    """db_exists() -> whether the test's database was created yet: SQLite, its file;
    PostgreSQL, its schema."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        return path.exists
    server, schema = os.environ[PG_URL_ENV], schema_of(db_url)
    return lambda: pg_schema_exists(server, schema)


@pytest.fixture(autouse=True)
def ended_runs_match_the_database(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Every run a test waits for is read back from the database as well, and the two
    must be equal. A run that ended in its own runner reaches its waiter as that runner
    kept it in memory (rust/engine/kept.rs), built from the ops it committed: this holds
    that copy to exactly what the database has, in every test of the suite but those
    marked `rewrites_stored_rows`."""
    from cloacina.runner import RunHandle, RunResult

    if request.node.get_closest_marker("rewrites_stored_rows"):
        return

    ended, wait_async = Runner._ended, RunHandle._wait_async

    def compare(waited: RunResult, stored: RunResult | None) -> None:
        assert stored is not None, f"run {waited.run_id} was waited for but is not stored"
        if waited != stored:
            detail = "; ".join(
                f"{f}: {getattr(waited, f)!r} != {getattr(stored, f)!r}"
                for f in waited.__dataclass_fields__
                if getattr(waited, f) != getattr(stored, f)
            )
            raise AssertionError(
                f"run {waited.run_id} as its waiter got it differs from the database: {detail}"
            )

    def checked_ended(self: Runner, run_id: str) -> RunResult:
        result = ended(self, run_id)
        compare(result, self.get_run(run_id))
        return result

    async def checked_wait_async(self: RunHandle) -> RunResult:
        result = await wait_async(self)
        raw = await self._runner._engine_or_raise().get_run_async(self.run_id)
        compare(result, None if raw is None else RunResult._from_native(raw))
        return result

    monkeypatch.setattr(Runner, "_ended", checked_ended)
    monkeypatch.setattr(RunHandle, "_wait_async", checked_wait_async)
