"""Helpers shared by the test modules: reading the database (SQLite file or PostgreSQL
schema), times, waits, scripts."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

SCRIPTS = Path(__file__).parent / "scripts"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def query(path: Path | str, sql: str, params: tuple = ()) -> list[dict]:
    """Opens the SQLite file with Python's own sqlite3, runs one query, closes the file."""
    with closing(sqlite3.connect(str(path), timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params).fetchall()]


# --- PostgreSQL: a schema per test, named in the URL ----------------------------------------
# A test's URL is the server's URL plus libpq's `options=-csearch_path=<schema>`: the
# backend reads its schema from it, and so does psycopg (libpq parses the same URL).


def with_schema(url: str, schema: str) -> str:
    """The server URL `url` with search_path set to `schema` (libpq's options parameter)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote('-csearch_path=' + schema, safe='')}"


def schema_of(url: str) -> str | None:
    """The schema named by with_schema() in a URL, or None."""
    for options in parse_qs(urlsplit(url).query).get("options", []):
        found = re.search(r"-c\s*search_path=([^\s,]+)", options)
        if found:
            return found.group(1)
    return None


def _pg_params(sql: str) -> str:
    """sqlite3's `?` placeholders -> psycopg's `%s` (outside quoted text); `%` -> `%%`."""
    out, quote_char = [], None
    for ch in sql:
        if quote_char:
            if ch == quote_char:
                quote_char = None
        elif ch in ("'", '"'):
            quote_char = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


def pg_connect(url: str):
    import psycopg  # a test dependency; imported only when PostgreSQL is tested
    from psycopg.rows import dict_row

    return psycopg.connect(url, autocommit=True, row_factory=dict_row, connect_timeout=10)


def pg_query(url: str, sql: str, params: tuple = ()) -> list[dict]:
    """query() for PostgreSQL: one connection to `url` (so its search_path), one query."""
    with pg_connect(url) as conn:
        return conn.execute(_pg_params(sql), tuple(params)).fetchall()


def pg_schema_exists(server_url: str, schema: str) -> bool:
    with pg_connect(server_url) as conn:
        found = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return found.fetchone() is not None


def pg_drop_schema(server_url: str, schema: str) -> None:
    """DROP SCHEMA ... CASCADE, waiting at most 10 s for locks; errors are ignored (the
    server is thrown away after the session anyway)."""
    try:
        with pg_connect(server_url) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    except Exception:
        pass


def execute(db_url: str, sql: str, *params) -> None:
    """Runs one writing statement on a test database (either backend), outside cloacina."""
    if db_url.startswith("sqlite:///"):
        with closing(sqlite3.connect(db_url[len("sqlite:///") :], timeout=30)) as conn:
            conn.execute(sql, params)
            conn.commit()
    else:
        with pg_connect(db_url) as conn:
            conn.execute(_pg_params(sql), tuple(params))


def loads(text: str | None):
    """JSON column -> Python value (None stays None)."""
    return None if text is None else json.loads(text)


def micros_to_datetime(us: int) -> datetime:
    """An integer column of microseconds since the epoch -> aware UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


def assert_utc(value: datetime) -> None:
    assert isinstance(value, datetime), value
    assert value.tzinfo is not None, f"{value!r} is naive"
    assert value.utcoffset() == timedelta(0), f"{value!r} is not UTC"


def intervals_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True when the closed intervals [start, end] of two tasks intersect."""
    return max(a[0], b[0]) < min(a[1], b[1])


def wait_all(handles, timeout: float):
    """Waits for every handle within one overall deadline; a deadlock fails with TimeoutError."""
    deadline = time.monotonic() + timeout
    results = []
    for handle in handles:
        remaining = max(deadline - time.monotonic(), 0.1)
        results.append(handle.wait(timeout=remaining))
    return results


def eventually(fetch, ok, timeout: float = 10.0, interval: float = 0.02):
    """Calls fetch() until ok(value) holds; returns that value, or fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"condition never held; last value: {value!r}"
        time.sleep(interval)


def run_script(name: str, *args: str, cwd: Path, env: dict | None = None, timeout: float = 90):
    """Runs tests/scripts/<name> with this interpreter; fails the test on a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        cwd=str(cwd),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc


@contextmanager
def busy_thread():
    """Runs a pure-Python busy loop on another thread meanwhile: it competes for the GIL,
    as other work in the process would, which widens windows between engine threads."""
    import threading

    stop = threading.Event()

    def spin():
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, name="busy-thread", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def cli(*args: str, cwd: Path, db: str | None, check: bool = True) -> subprocess.CompletedProcess:
    """Runs ``python -m cloacina ARGS`` in ``cwd`` with $CLOACINA_DATABASE_URL set to
    ``db`` (unset for None); with ``check``, fails the test unless it exits 0."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "CLOACINA_DATABASE_URL"}
    if db is not None:
        env["CLOACINA_DATABASE_URL"] = db
    proc = subprocess.run(
        [sys.executable, "-m", "cloacina", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc
