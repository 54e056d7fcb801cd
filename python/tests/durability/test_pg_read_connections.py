"""A runner's read connections on PostgreSQL (callers' reads, runs committed beside the
writer, NOTIFY): reused from one read to the next, never more than the pool's four, and a
connection whose read was given up midway (a wait timing out while its query is blocked)
is closed, never handed to the next read.

On a server of the test's own: every `cloacina` backend there is this test's."""

from __future__ import annotations

import threading
import time

import pytest
from cloacina import Runner, Workflow, task
from helpers import eventually, pg_connect

pytestmark = pytest.mark.postgres

POOL = 4  # PostgresConfig::pool_size


@task(id="pgrc_one")
def pgrc_one(ctx):
    ctx["n"] = ctx.get("n", 0) + 1


ONE = Workflow("pgrc_wf", [pgrc_one])


def backends(admin_url: str) -> list[dict]:
    with pg_connect(admin_url) as conn:
        return conn.execute(
            "SELECT pid, backend_start, state, wait_event_type, query FROM pg_stat_activity "
            "WHERE application_name = 'cloacina' AND pid <> pg_backend_pid()"
        ).fetchall()


def test_reads_reuse_their_connection(private_pg, pg_tenant):
    t = pg_tenant(private_pg.url)
    with Runner(t.url, max_concurrency=2) as runner:
        run_id = runner.run(ONE, {}).run_id
        runner.get_run(run_id)
        before = {b["pid"]: b["backend_start"] for b in backends(private_pg.url)}
        for _ in range(40):
            assert runner.get_run(run_id).context == {"n": 1}
            assert runner.list_runs(workflow="pgrc_wf")[0].run_id == run_id
        after = {b["pid"]: b["backend_start"] for b in backends(private_pg.url)}
    # The same backends, none new: one reader served the 80 sequential reads.
    assert after == before, (before, after)
    # The writer, the listener and the readers (run() read beside a background check).
    assert len(after) <= POOL + 2, after


def test_concurrent_reads_stay_within_the_pool(private_pg, pg_tenant):
    t = pg_tenant(private_pg.url)
    with Runner(t.url, max_concurrency=2) as runner:
        run_id = runner.run(ONE, {}).run_id
        stop = threading.Event()
        errors: list[BaseException] = []

        def read() -> None:
            try:
                while not stop.is_set():
                    assert runner.get_run(run_id).status == "completed"
            except BaseException as e:  # reported below
                errors.append(e)

        readers = [threading.Thread(target=read) for _ in range(12)]
        for r in readers:
            r.start()
        most = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            most = max(most, len(backends(private_pg.url)))
            time.sleep(0.02)
        stop.set()
        for r in readers:
            r.join(30)
    assert not errors, errors
    # Readers beyond the pool wait for a connection; writer and listener come on top.
    assert 3 < most <= POOL + 2, most


def test_a_read_given_up_midway_closes_its_connection(private_pg, pg_tenant):
    t = pg_tenant(private_pg.url)
    with Runner(t.url, max_concurrency=2) as driver:
        driver.run(ONE, {})  # creates the schema
    # A submit-only runner: its wait reads the run's status from the database.
    with Runner(t.url, max_concurrency=0) as client:
        handle = client.start(ONE, {"n": 41})
        assert client.get_run(handle.run_id).status == "queued"
        with pg_connect(t.url) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                handle.wait(timeout=0.5)
            # The wait and its last look (at most 1 s) both gave up on a blocked read:
            # the caller is not held until the lock goes.
            assert time.monotonic() - started < 5
            # The abandoned reads are still blocked in the server.
            blocked = {b["pid"] for b in backends(private_pg.url) if b["wait_event_type"] == "Lock"}
            assert blocked, backends(private_pg.url)
            locker.execute("ROLLBACK")
        # Their connections were dropped, not reused: the server ends those backends once
        # their reads get past the lock, and the next reads answer right, on a new one.
        eventually(
            lambda: {b["pid"] for b in backends(private_pg.url)}, lambda pids: not pids & blocked
        )
        for _ in range(5):
            assert client.get_run(handle.run_id).status == "queued"
            assert handle.status() == "queued"
