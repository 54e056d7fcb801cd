"""A run started while other runs are running, as the server restarts. The caller then
commits the new run itself, on a pooled connection (not through the scheduler's batch):
that write must wait the server out as the scheduler's writer does, and the run must be
driven to its end once the server is back, once."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from cloacina import Runner, Workflow, task
from helpers import eventually

pytestmark = pytest.mark.postgres

gate = threading.Event()
entered = threading.Event()


@task(id="pgsd_hold")
def pgsd_hold(ctx):
    entered.set()
    gate.wait(60)


@task(id="pgsd_a")
def pgsd_a(ctx):
    ctx["n"] = ctx["n"] + 1


@task(id="pgsd_b", dependencies=["pgsd_a"])
def pgsd_b(ctx):
    ctx["n"] = ctx["n"] * 10


HOLD = Workflow("pgsd_hold_wf", [pgsd_hold])
CHAIN = Workflow("pgsd_chain_wf", [pgsd_a, pgsd_b])


def refused(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=1):
            return False
    except psycopg.OperationalError:
        return True


def test_a_start_while_runs_run_waits_out_a_server_restart(private_pg, pg_tenant, caplog):
    caplog.set_level(logging.DEBUG, logger="cloacina")
    t = pg_tenant(private_pg.url)
    gate.clear()
    entered.clear()
    with Runner(t.url, max_concurrency=4) as runner:
        held = runner.start(HOLD)
        assert entered.wait(30)
        restart = threading.Thread(
            target=private_pg.restart, args=("fast",), kwargs={"down_for": 1.5}
        )
        restart.start()
        try:
            eventually(lambda: refused(private_pg.url), bool, timeout=20)
            began = time.monotonic()
            handle = runner.start(CHAIN, {"n": 1})
            waited = time.monotonic() - began
        finally:
            restart.join(60)
        gate.set()
        assert handle.wait(60).context["n"] == 20
        assert held.wait(60).status == "completed"
    print(f"\nstart() during the restart returned after {waited:.2f} s")
    # It was made while the server refused connections, and by the caller itself.
    assert waited > 0.2
    assert any(
        handle.run_id in r.getMessage() and "committed by its submitter" in r.getMessage()
        for r in caplog.records
    )
    runs = t.rows("SELECT workflow, status, owner FROM runs ORDER BY workflow")
    assert runs == [
        {"workflow": "pgsd_chain_wf", "status": "completed", "owner": None},
        {"workflow": "pgsd_hold_wf", "status": "completed", "owner": None},
    ]
    tasks = t.rows("SELECT task_id, status, attempts FROM run_tasks ORDER BY task_id")
    assert [(r["task_id"], r["status"], r["attempts"]) for r in tasks] == [
        ("pgsd_a", "completed", 1),
        ("pgsd_b", "completed", 1),
        ("pgsd_hold", "completed", 1),
    ]
