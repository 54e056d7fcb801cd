"""Notebook-grade costs: listing runs that hold large contexts, and runners left idle.

    python bench/notebook.py [--runs 1000] [--mb 1] [--idle-seconds 10]

- **listing**: a database holding ``--runs`` runs whose input context is ``--mb`` MB each
  (one run made by the engine, then copied in SQL). ``runner.list_runs(limit=runs)`` is
  timed (median of 5) with the growth of resident memory, next to the same listing
  query through Python's ``sqlite3`` in the same process (the peer: what reading the
  run rows costs at least). Targets: under 50 ms and under 20 MB.
- **idle**: the CPU time a process spends while 1, then 23, runners are open and idle
  (after one run each), over ``--idle-seconds``. Target: under 0.1% of a core per
  idle runner (the process's total is shown too).
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from cloacina import Runner, Workflow, task


def rss_mb() -> float:
    """Resident memory of this process, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@task(id="bench_listed")
def bench_listed(ctx):
    return {"n": len(ctx["payload"])}


LISTED = Workflow("bench_listed", [bench_listed])


def fill(path: Path, runs: int, mb: float) -> None:
    """One run made by the engine, copied in SQL to ``runs`` runs."""
    with Runner(f"sqlite:///{path}") as runner:
        first = runner.run(LISTED, {"payload": "x" * int(mb * 1_000_000)})
        assert first.status == "completed", first.error
    with sqlite3.connect(path) as conn:
        for i in range(1, runs):
            new_id = f"{first.run_id[:-6]}{i:06d}"
            conn.execute(
                "INSERT INTO runs (run_id, workflow, version, status, error, owner, "
                "lease_expires_at, idempotency_key, created_at, started_at, finished_at, "
                "cancel_requested_at, input) SELECT ?, workflow, version, status, error, owner, "
                "lease_expires_at, NULL, created_at - ?, started_at - ?, finished_at - ?, "
                "cancel_requested_at, input FROM runs WHERE run_id = ?",
                (new_id, i, i, i, first.run_id),
            )
            conn.execute(
                "INSERT INTO run_tasks (run_id, task_id, position, dependencies, status, "
                "attempts, started_at, finished_at, output_inline, output_id) SELECT ?, task_id, "
                "position, dependencies, status, attempts, started_at, finished_at, output_inline, "
                "output_id "
                "FROM run_tasks WHERE run_id = ?",
                (new_id, first.run_id),
            )
    os.sync()


def bench_listing(path: Path, runs: int) -> dict[str, float]:
    """Median seconds and memory growth of list_runs, and of the raw query."""
    raw_times = []
    with sqlite3.connect(path) as conn:
        for _ in range(5):
            started = time.perf_counter()
            rows = conn.execute(
                "SELECT run_id, workflow, version, status, error, created_at, started_at, "
                "finished_at, idempotency_key FROM runs ORDER BY created_at DESC, run_id DESC "
                "LIMIT ?",
                (runs,),
            ).fetchall()
            raw_times.append(time.perf_counter() - started)
            assert len(rows) == runs
    times, growth = [], []
    with Runner(f"sqlite:///{path}", recover=False) as runner:
        for _ in range(5):
            gc.collect()
            before = rss_mb()
            started = time.perf_counter()
            listed = runner.list_runs(limit=runs)
            times.append(time.perf_counter() - started)
            growth.append(rss_mb() - before)
            assert len(listed) == runs
            del listed
    return {
        "list_runs_ms": statistics.median(times) * 1000,
        "rss_growth_mb": max(growth),
        "raw_query_ms": statistics.median(raw_times) * 1000,
    }


def bench_idle(seconds: float) -> dict[int, float]:
    """Percent of one core used while 1 and 23 runners sit idle."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1, 23):
            runners = [Runner(f"sqlite:///{tmp}/idle{count}_{i}.db") for i in range(count)]
            for r in runners:
                r.run(LISTED, {"payload": "x"})
            time.sleep(1.0)  # let the runs' threads settle
            cpu0, t0 = cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = cpu_seconds(), time.monotonic()
            out[count] = 100 * (cpu1 - cpu0) / (t1 - t0)
            for r in runners:
                r.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--mb", type=float, default=1.0)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        path = Path(tmp) / "listing.db"
        started = time.monotonic()
        fill(path, args.runs, args.mb)
        size = path.stat().st_size / 1e6
        print(
            f"filled {args.runs} runs of {args.mb} MB ({size:.0f} MB) in "
            f"{time.monotonic() - started:.1f} s"
        )
        listing = bench_listing(path, args.runs)
    idle = bench_idle(args.idle_seconds)
    print()
    print("| measure | cloacina | peer | target |")
    print("| --- | --- | --- | --- |")
    print(
        f"| list_runs of {args.runs} runs x {args.mb} MB | {listing['list_runs_ms']:.1f} ms | "
        f"{listing['raw_query_ms']:.1f} ms (sqlite3, run rows) | < 50 ms |"
    )
    print(f"| memory growth of that listing | {listing['rss_growth_mb']:.1f} MB | | < 20 MB |")
    for count, pct in idle.items():
        print(
            f"| CPU of {count} idle runner(s) | {pct:.3f}% of a core "
            f"({pct / count:.4f}% per runner) | | < 0.1% per runner |"
        )


if __name__ == "__main__":
    main()
