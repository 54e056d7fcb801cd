"""Several processes on one PostgreSQL schema at once: each drives its own runs while
another reads; nothing is lost, run twice or taken from a live owner, and no database
error (serialization failure, deadlock) reaches a caller."""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytestmark = pytest.mark.postgres

PROCESSES = 4
RUNS = 250
TASKS = ("pg_load_root", "pg_load_left", "pg_load_right")


def test_four_processes_drive_their_runs_while_another_reads(pg_tenant, pg_server_url):
    t = pg_tenant()
    flow = "small:pg_load:3:0"  # the same workflow in every process: none may take another's
    began = time.monotonic()
    loaders = [
        t.proc("load", "--flow", flow, "--runs", str(RUNS), "--batch", "50", "--tag", f"p{i}",
               "--timeout", "90", label=f"load{i}")
        for i in range(PROCESSES)
    ]  # fmt: skip
    reader = t.proc("reader", "--flow", flow, label="reader")
    try:
        pids = {}
        for i, proc in enumerate(loaders):
            pids[f"p{i}"] = proc.expect("runner_open", timeout=60)["pid"]
        reader.expect("runner_open", timeout=60)
        done = {}
        for i, proc in enumerate(loaders):
            event = proc.event(timeout=120)
            assert event.get("event") == "done", f"{event}\n{proc.describe()}"
            assert proc.finish() == 0, proc.describe()
            done[f"p{i}"] = event
        reader.send("STOP")
        read = reader.expect("read", timeout=30)
        assert reader.finish() == 0, reader.describe()
    finally:
        for proc in (*loaders, reader):
            proc.__exit__(None, None, None)
    elapsed = time.monotonic() - began
    print(
        f"\n{PROCESSES} x {RUNS} runs in {elapsed:.1f} s (per process: "
        + ", ".join(f"{d['seconds']:.1f} s" for d in done.values())
        + f"); reader: {read['calls']}"
    )

    for tag, event in done.items():
        assert event["statuses"] == {f"{tag}-{i:04d}": "completed" for i in range(RUNS)}, tag
        assert event["wrong"] == [], (tag, event["wrong"])
        assert event["warnings"] == [], (tag, event["warnings"])
    assert read["odd"] == [], read["odd"]
    assert read["warnings"] == [], read["warnings"]
    assert read["calls"]["get"] > 0 and read["calls"]["list"] > 10, read["calls"]

    # Each task ran exactly once, in the process that submitted its run.
    effects = t.effects()
    starts = Counter((e.key, e.task) for e in effects)
    expected = {(f"{tag}-{i:04d}", task) for tag in pids for i in range(RUNS) for task in TASKS}
    assert set(starts) == expected
    assert [k for k, n in starts.items() if n != 1] == []
    moved = [e for e in effects if pids[e.key.split("-")[0]] != e.pid]
    assert moved == [], moved[:10]

    runs = t.rows("SELECT run_id, status, owner, owner_epoch FROM runs")
    assert len(runs) == PROCESSES * RUNS
    assert Counter(r["status"] for r in runs) == {"completed": PROCESSES * RUNS}
    assert all(r["owner"] is None and r["owner_epoch"] == 0 for r in runs), [
        r for r in runs if r["owner"] is not None or r["owner_epoch"] != 0
    ][:5]
    tasks = t.rows("SELECT status, attempts, count(*) AS n FROM run_tasks GROUP BY 1, 2")
    assert tasks == [{"status": "completed", "attempts": 1, "n": PROCESSES * RUNS * 3}], tasks
    assert t.rows("SELECT count(*) AS n FROM earlier_attempts") == [{"n": 0}]
    assert t.rows("SELECT kind, count(*) AS n FROM run_events GROUP BY kind") == []
