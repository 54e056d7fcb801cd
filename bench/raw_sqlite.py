#!/usr/bin/env python3
"""Raw SQLite commit rate: the floor a durable engine on SQLite is measured against.

One transaction = BEGIN; one INSERT of a task-result-sized row; COMMIT. One connection,
Python's stdlib sqlite3 (the same SQLite library cloacina binds to), a file in the
directory the engines' databases live in (so: the same disk).

Modes (journal_mode + synchronous):
  WAL+NORMAL   cloacina's default durability ("normal")
  WAL+FULL     cloacina's durability="full"
  DELETE+FULL  SQLite's own default, which is what DBOS's SQLite system database runs with

Run alone:  python bench/raw_sqlite.py [--n 3000] [--reps 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from typing import Any

MODES = ("WAL+NORMAL", "WAL+FULL", "DELETE+FULL")
WARMUP = 50
PAYLOAD = json.dumps({"x": 1, "v17": 2, "note": "a small task output"})


def _remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def commit_run(path: str, mode: str, n: int) -> tuple[float, int]:
    """Seconds for n one-row transactions, and the rows found afterwards."""
    journal, sync = mode.split("+")
    _remove_db(path)
    con = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT ourselves
    try:
        got = con.execute(f"PRAGMA journal_mode={journal}").fetchone()[0]
        if got.upper() != journal:
            raise RuntimeError(f"asked for journal_mode={journal}, SQLite answered {got}")
        con.execute(f"PRAGMA synchronous={sync}")
        con.execute(
            "CREATE TABLE results (id INTEGER PRIMARY KEY, run_id TEXT, task_id TEXT,"
            " status TEXT, output TEXT, finished_at INTEGER)"
        )
        insert = (
            "INSERT INTO results (run_id, task_id, status, output, finished_at) VALUES (?,?,?,?,?)"
        )

        def one(i: int) -> None:
            con.execute("BEGIN")
            con.execute(insert, ("run-1", f"t{i}", "completed", PAYLOAD, time.time_ns() // 1000))
            con.execute("COMMIT")

        for i in range(WARMUP):
            one(-1 - i)
        t0 = time.perf_counter()
        for i in range(n):
            one(i)
        seconds = time.perf_counter() - t0
    finally:
        con.close()
    check = sqlite3.connect(path)
    try:
        rows = check.execute("SELECT count(*) FROM results").fetchone()[0]
    finally:
        check.close()
    _remove_db(path)
    return seconds, rows


def measure(
    directory: str, n: int, reps: int, modes: tuple[str, ...] = MODES, verbose: bool = True
) -> dict[str, Any]:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "raw-commit.db")
    out: dict[str, Any] = {
        "sqlite_version": sqlite3.sqlite_version,
        "n": n,
        "reps": reps,
        "dir": os.path.abspath(directory),
        "modes": {},
    }
    for mode in modes:
        times, problems = [], []
        for _ in range(reps):
            seconds, rows = commit_run(path, mode, n)
            times.append(seconds)
            if rows != n + WARMUP:
                problems.append(f"{rows} rows persisted, expected {n + WARMUP}")
        med = statistics.median(times)
        out["modes"][mode] = {
            "median_s": med,
            "us_per_commit": 1e6 * med / n,
            "ms_per_commit": 1e3 * med / n,
            "commits_per_s": n / med,
            "all_s": times,
            "valid": not problems,
            "problems": problems,
        }
        if verbose:
            print(
                f"  raw {mode:12s} {1e6 * med / n:9.1f} us/commit  {n / med:9.0f} commits/s  "
                f"reps={[round(t, 3) for t in times]}{' BAD ' + str(problems) if problems else ''}",
                file=sys.stderr,
                flush=True,
            )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=3000, help="commits per repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".work", "raw")
    )
    ap.add_argument("--modes", default=",".join(MODES))
    a = ap.parse_args()
    print(json.dumps(measure(a.dir, a.n, a.reps, tuple(a.modes.split(","))), indent=2))


if __name__ == "__main__":
    main()
