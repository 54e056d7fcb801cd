"""Tenants on one PostgreSQL database, one schema each: runs, queues, takeovers and
notifications never cross from one to the other."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cloacina import Runner
from helpers import pg_connect
from pg_helpers import PG_FLOWS, Tenant, final, owner_pid, wait_past_restart_grace

pytestmark = pytest.mark.postgres


def load_flows():
    """Defines the workflows of scripts/pg_flows.py in this process."""
    from cloacina.cli import load_target

    return load_target(str(PG_FLOWS))


def test_runs_of_one_tenant_are_invisible_to_the_other(pg_tenant, tmp_path, monkeypatch):
    a, b = pg_tenant(), pg_tenant()
    assert a.server_url == b.server_url  # the same database
    monkeypatch.setenv("CLOACINA_TEST_LOG", str(tmp_path / "effects"))
    flows = load_flows()
    wf = flows.small("pg_iso", 3, 0)  # the same workflow, same task ids, in both

    # Each tenant by its own route: A by the URL's search_path, B by schema=.
    with Runner(a.url) as ra, Runner(a.server_url, schema=b.schema) as rb:
        a_ids = [ra.run(wf, {"key": f"a{i}", "i": i}).run_id for i in range(3)]
        b_ids = [rb.run(wf, {"key": f"b{i}", "i": i}).run_id for i in range(2)]
        # The same idempotency key makes one run in each tenant, not one in all.
        a_keyed = ra.start(wf, {"key": "ka", "i": 7}, idempotency_key="same-key").run_id
        b_keyed = rb.start(wf, {"key": "kb", "i": 8}, idempotency_key="same-key").run_id
        assert a_keyed != b_keyed
        a_ids.append(a_keyed)
        b_ids.append(b_keyed)
        assert ra.start(wf, {}, idempotency_key="same-key").run_id == a_keyed
        assert rb.start(wf, {}, idempotency_key="same-key").run_id == b_keyed
        final(a, [a_keyed])
        final(b, [b_keyed])

        assert sorted(r.run_id for r in ra.list_runs(limit=100)) == sorted(a_ids)
        assert sorted(r.run_id for r in rb.list_runs(limit=100)) == sorted(b_ids)
        assert sorted(r.run_id for r in ra.list_runs(workflow="pg_iso", status="completed")) == (
            sorted(a_ids)
        )
        for run_id in b_ids:
            assert ra.get_run(run_id) is None
            assert ra.cancel(run_id) is False
        for run_id in a_ids:
            assert rb.get_run(run_id) is None
            assert rb.cancel(run_id) is False
            with pytest.raises(Exception, match="no run"):
                rb.resume(run_id)
        assert ra.get_run(a_ids[0]).context["key"] == "a0"
        assert rb.get_run(b_ids[0]).context["key"] == "b0"
        assert ra.purge(0) == len(a_ids)  # purges its own tenant's runs only
        assert ra.list_runs() == []
        assert sorted(r.run_id for r in rb.list_runs(limit=100)) == sorted(b_ids)

    # In the database: each tenant's rows in its own schema, nothing elsewhere.
    assert a.rows("SELECT count(*) AS n FROM runs") == [{"n": 0}]
    assert sorted(r["run_id"] for r in b.rows("SELECT run_id FROM runs")) == sorted(b_ids)
    tables = a.rows(
        "SELECT schemaname, count(*) AS n FROM pg_tables WHERE tablename IN "
        "('runs', 'run_tasks', 'earlier_attempts', 'run_events', '_sqlx_migrations') "
        "GROUP BY schemaname ORDER BY schemaname"
    )
    ours = {r["schemaname"]: r["n"] for r in tables if r["schemaname"] in (a.schema, b.schema)}
    assert ours == {a.schema: 5, b.schema: 5}, tables
    assert "public" not in {r["schemaname"] for r in tables}, tables

    # From the command line: a run id of A is unknown in B.
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "cloacina", "--db", a.server_url, "--schema", a.schema,
         "runs", "show", b_ids[0]],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 2 and f"no run with id '{b_ids[0]}'" in shown.stderr, shown
    shown = subprocess.run(
        [sys.executable, "-m", "cloacina", "--db", b.url, "runs", "show", b_ids[0], "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.returncode == 0 and json.loads(shown.stdout)["run_id"] == b_ids[0], shown


def test_notifications_and_waiters_stay_in_their_tenant(pg_tenant):
    """Runs finishing in B notify B's channel only; a waiter in A, whose run waits at a
    gate, is not confused by them (it returns only once its own run is final)."""
    a, b = pg_tenant(), pg_tenant()
    gate = a.workdir / "gate"
    flow_a, flow_b = "chain:pg_wait_a:2:0", "small:pg_noise:3:0"
    with pg_connect(a.server_url) as listen:
        listen.execute(f"LISTEN cloacina_{a.schema}")
        listen.execute(f"LISTEN cloacina_{b.schema}")

        # The driver claims A's run; the waiter only follows it (max_concurrency=0).
        with a.proc("follower", "--flow", flow_a, label="a-driver") as driver, \
             a.proc("follower", "--flow", flow_a, "--concurrency", "0",
                    label="a-waiter") as waiter:  # fmt: skip
            driver.expect("runner_open", timeout=60)
            waiter.expect("runner_open", timeout=60)
            run_id = start_gated(a, flow_a, gate)
            waiter.send(run_id)
            drain(listen)
            # B's traffic: many runs finishing in another process.
            with b.proc("load", "--flow", flow_b, "--runs", "60", "--batch", "20",
                        "--tag", "b", label="b-load") as noise:  # fmt: skip
                noise.expect("runner_open", timeout=60)
                done = noise.expect("done", timeout=90)
                assert noise.finish() == 0, noise.describe()
            assert set(done["statuses"].values()) == {"completed"}
            time.sleep(0.3)
            channels = drain(listen)
            assert f"cloacina_{b.schema}" in channels, channels
            assert f"cloacina_{a.schema}" not in channels, channels
            # A's waiter is still waiting: its run is not final.
            assert waiter.lines.empty(), waiter.describe()
            assert a.rows("SELECT status FROM runs WHERE run_id = ?", run_id) == [
                {"status": "running"}
            ]
            gate.touch()
            result = waiter.expect("finished", timeout=30)
            assert result["run_id"] == run_id and result["status"] == "completed", result
            for proc in (driver, waiter):
                proc.send("DONE")
                proc.expect("closed", timeout=30)
                assert proc.finish() == 0, proc.describe()
        channels = drain(listen)
        assert f"cloacina_{a.schema}" in channels, channels  # A's run finishing told A


def start_gated(tenant: Tenant, flow: str, gate: Path) -> str:
    """Queues a run of `flow` whose first task waits for `gate` (a submit-only runner of
    this process), and waits until the tenant's driver claimed it."""
    wf = load_flows().from_spec(flow)
    with Runner(tenant.url, max_concurrency=0) as submit:
        run_id = submit.start(wf, {"key": "gated", "gate": str(gate)}).run_id
    deadline = time.monotonic() + 30
    while tenant.rows("SELECT status FROM runs WHERE run_id = ?", run_id)[0]["status"] != "running":
        assert time.monotonic() < deadline, "the gated run was never claimed"
        time.sleep(0.02)
    return run_id


def drain(conn) -> set[str]:
    """The channels of the notifications received on `conn` so far."""
    return {n.channel for n in conn.notifies(timeout=0.2)}


def test_queues_and_takeovers_stay_in_their_tenant(pg_tenant, pg_server_url):
    """A worker of B defining the same workflow never claims A's queued runs nor takes
    over A's runs whose owner died; a worker of A does both."""
    wait_past_restart_grace(pg_server_url)
    a, b = pg_tenant(), pg_tenant()
    flow = "chain:pg_tenant_q:2:0.3"
    with b.worker(flow, "--concurrency", "4", label="b-worker") as bw:
        wait_for(lambda: "serving" in bw.stderr(), bw)
        # An owner of A dies mid-run (first: defining the workflow, it would claim A's
        # queued runs too).
        with a.proc("owner", "--flow", flow, label="a-owner") as owner:
            owner.expect("runner_open", timeout=60)
            (orphan,) = owner.expect("started", timeout=30)["run_ids"]
            a.wait_effect(lambda es: any(e.key == "k0" for e in es), owner)
            owner.sigkill()
        with a.proc("submit", "--flow", flow, "--runs", "4", "--timeout", "60",
                    label="a-client") as client:  # fmt: skip
            client.expect("runner_open", timeout=60)
            queued = client.expect("queued", timeout=60)["run_ids"]
            time.sleep(2.0)  # B checks for work every 0.5 s (and at every notification)
            rows = a.rows("SELECT run_id, status, owner FROM runs")
            assert {r["run_id"]: r["status"] for r in rows} == {
                **dict.fromkeys(queued.values(), "queued"),
                orphan: "running",
            }, rows
            assert all(owner_pid(r["owner"]) in (None, owner.pid) for r in rows), rows
            assert b.rows("SELECT count(*) AS n FROM runs") == [{"n": 0}]
            assert all(e.pid != bw.pid for e in a.effects())

            with a.worker(flow, "--concurrency", "4", label="a-worker") as aw:
                finished = client.expect("finished", timeout=60)
                assert set(finished["statuses"].values()) == {"completed"}, finished
                assert final(a, [orphan]) == {orphan: "completed"}
                aw.proc.terminate()
                assert aw.finish(30) == 0, aw.describe()
            assert client.finish() == 0, client.describe()
        bw.proc.terminate()
        assert bw.finish(30) == 0, bw.describe()
    assert {e.pid for e in a.effects()} == {owner.pid, aw.pid}
    assert b.rows("SELECT count(*) AS n FROM runs") == [{"n": 0}]


def wait_for(ok, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert proc.proc.poll() is None, proc.describe()
        assert time.monotonic() < deadline, proc.describe()
        time.sleep(0.02)
