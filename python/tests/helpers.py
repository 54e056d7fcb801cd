"""Helpers shared by the test modules: reading the SQLite file, times, waits, scripts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

SCRIPTS = Path(__file__).parent / "scripts"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def query(path: Path | str, sql: str, params: tuple = ()) -> list[dict]:
    """Opens the SQLite file with Python's own sqlite3, runs one query, closes the file."""
    with closing(sqlite3.connect(str(path), timeout=30)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params).fetchall()]


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
