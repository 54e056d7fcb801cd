"""Processes opening a fresh PostgreSQL schema at the same moment: one creates and
migrates it, the others wait for it and find it done; all of them then work."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.postgres

PROCESSES = 4
REPS = 3


def test_processes_opening_a_fresh_schema_at_once_migrate_it_once(pg_tenant):
    for rep in range(REPS):
        t = pg_tenant()
        start_at = time.time() + 1.5  # after every interpreter has imported cloacina
        procs = [
            t.proc("race", "--flow", f"small:pg_race{rep}:3:0", "--start-at", str(start_at),
                   label=f"race{rep}-{i}")
            for i in range(PROCESSES)
        ]  # fmt: skip
        try:
            done = []
            for proc in procs:
                event = proc.event(timeout=60)
                assert event.get("event") == "done", f"{event}\n{proc.describe()}"
                assert proc.finish() == 0, proc.describe()
                done.append(event)
        finally:
            for proc in procs:
                proc.__exit__(None, None, None)
        print(f"\nrep {rep}: opened in " + ", ".join(f"{d['open_seconds']:.2f} s" for d in done))
        assert [d["status"] for d in done] == ["completed"] * PROCESSES, done
        assert all(d["warnings"] == [] for d in done), done

        applied = t.rows("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        versions = [r["version"] for r in applied]
        assert versions and len(versions) == len(set(versions)), applied
        assert all(r["success"] for r in applied), applied
        assert versions == list(range(1, len(versions) + 1)), applied
        tables = t.rows("SELECT tablename FROM pg_tables WHERE schemaname = ? ORDER BY 1", t.schema)
        assert [r["tablename"] for r in tables] == [
            "_sqlx_migrations",
            "earlier_attempts",
            "run_events",
            "run_tasks",
            "runs",
        ], tables
        runs = t.rows("SELECT status FROM runs")
        assert runs == [{"status": "completed"}] * PROCESSES, runs
