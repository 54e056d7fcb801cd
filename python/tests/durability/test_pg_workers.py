"""Queued runs on PostgreSQL: a submit-only client (max_concurrency=0) queues runs, worker
processes (`python -m cloacina worker`) claim and drive each exactly once, and stop
cleanly on SIGTERM: an idle worker at once, a busy one after its running attempts."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest
from pg_helpers import final, owner_pid, wait_past_restart_grace

pytestmark = pytest.mark.postgres

N = 40
TASKS = ("pg_queue_s00", "pg_queue_s01", "pg_queue_s02")


def wait_serving(worker, timeout: float = 60.0) -> None:
    """Until the worker logs that it serves (its runner is open, claiming)."""
    deadline = time.monotonic() + timeout
    while "serving" not in worker.stderr():
        assert worker.proc.poll() is None, f"the worker exited\n{worker.describe()}"
        assert time.monotonic() < deadline, f"the worker never served\n{worker.describe()}"
        time.sleep(0.02)


def sigterm_and_wait(worker, timeout: float) -> float:
    """SIGTERM, then the seconds until it exited (asserting exit code 0)."""
    began = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    rc = worker.finish(timeout)
    took = time.monotonic() - began
    assert rc == 0, f"exit code {rc}\n{worker.describe()}"
    return took


def test_two_workers_claim_queued_runs_exactly_once_and_stop_on_sigterm(pg_tenant):
    t = pg_tenant()
    flow = "chain:pg_queue:3:0.05"
    gate = t.workdir / "gate"  # the runs' first task waits for it
    with t.proc("submit", "--flow", flow, "--runs", str(N), "--timeout", "90",
                "--gate", str(gate), label="client") as client:  # fmt: skip
        client.expect("runner_open", timeout=60)
        run_ids = client.expect("queued", timeout=60)["run_ids"]
        assert len(run_ids) == N
        # Nobody defines the workflow yet (the client only submits): all wait, unowned.
        time.sleep(0.5)
        rows = t.rows("SELECT status, owner, started_at FROM runs")
        assert [(r["status"], r["owner"], r["started_at"]) for r in rows] == [
            ("queued", None, None)
        ] * N
        assert t.effects() == []

        with (
            t.worker(flow, "--concurrency", "4", label="worker-a") as a,
            t.worker(flow, "--concurrency", "4", label="worker-b") as b,
        ):
            wait_serving(a)
            wait_serving(b)
            # Each claims up to its concurrency (4) and waits at the gate: both have some
            # whichever started first. Then the gate opens and they share the rest.
            deadline = time.monotonic() + 30
            while True:
                owners = t.rows(
                    "SELECT owner, count(*) AS n FROM runs WHERE owner IS NOT NULL GROUP BY 1"
                )
                if {owner_pid(r["owner"]) for r in owners} == {a.pid, b.pid}:
                    break
                assert time.monotonic() < deadline, (owners, a.describe(), b.describe())
                time.sleep(0.02)
            assert all(r["n"] <= 4 for r in owners), owners  # no more than its concurrency
            gate.touch()
            finished = client.expect("finished", timeout=90)
            assert client.finish() == 0, client.describe()
            assert finished["statuses"] == {f"q{i:03d}": "completed" for i in range(N)}
            assert finished["warnings"] == [], finished["warnings"]

            # Both idle now: SIGTERM ends them at once, cleanly.
            took_a = sigterm_and_wait(a, timeout=15)
            took_b = sigterm_and_wait(b, timeout=15)
            print(f"\nSIGTERM to exit of idle workers: {took_a:.2f} s, {took_b:.2f} s")
            assert took_a < 5 and took_b < 5, (took_a, took_b)
            for w in (a, b):
                assert "Traceback" not in w.stderr(), w.describe()
                assert "draining" in w.stderr(), w.describe()

    effects = t.effects()
    starts = Counter((e.key, e.task) for e in effects if e.phase == "start")
    assert set(starts) == {(f"q{i:03d}", task) for i in range(N) for task in TASKS}
    assert [k for k, n in starts.items() if n != 1] == [], "a task ran twice"
    # Each run was driven by one worker from start to end; both workers got some.
    by_run = {}
    for e in effects:
        by_run.setdefault(e.key, set()).add(e.pid)
    assert all(len(pids) == 1 for pids in by_run.values()), by_run
    per_worker = Counter(next(iter(pids)) for pids in by_run.values())
    print(f"runs per worker: {dict(per_worker)}")
    assert set(per_worker) == {a.pid, b.pid}, per_worker

    runs = t.rows("SELECT run_id, status, owner, owner_epoch FROM runs")
    assert sorted(r["run_id"] for r in runs) == sorted(run_ids.values())
    assert all(r["status"] == "completed" and r["owner"] is None for r in runs), runs
    assert all(r["owner_epoch"] == 1 for r in runs), "each run was claimed exactly once"
    # One event per run: claimed, by the worker that ran it.
    events = t.rows("SELECT run_id, kind, detail FROM run_events")
    assert sorted((e["run_id"], e["kind"]) for e in events) == sorted(
        (run_id, "claimed") for run_id in run_ids.values()
    )
    key_of = {run_id: key for key, run_id in run_ids.items()}
    details = [json.loads(e["detail"]) for e in events]
    for e, detail in zip(events, details, strict=True):
        assert {owner_pid(detail["owner"])} == by_run[key_of[e["run_id"]]], (detail, by_run)
    tasks = t.rows("SELECT status, attempts, count(*) AS n FROM run_tasks GROUP BY 1, 2")
    assert tasks == [{"status": "completed", "attempts": 1, "n": N * len(TASKS)}], tasks
    # A queued run had no owner before its claim (as a recovered run's event names the
    # dead owner, not the new one).
    assert [d["previous_owner"] for d in details] == [None] * N, details[:3]


def test_sigterm_drains_a_busy_worker_and_the_other_continues_its_run(pg_tenant, pg_server_url):
    """A worker told to stop mid-task finishes that attempt (its completion is stored),
    starts nothing more and exits 0; the other worker takes the run over at once (the
    drained worker's liveness lock went with its connection) and runs only what is left."""
    wait_past_restart_grace(pg_server_url)  # a closed owner is told by its lock from then
    t = pg_tenant()
    flow = "chain:pg_drain:3:1.0"
    ids = ["pg_drain_s00", "pg_drain_s01", "pg_drain_s02"]
    with t.worker(flow, "--concurrency", "2", label="worker-a") as a:
        wait_serving(a)
        with t.proc("submit", "--flow", flow, "--runs", "1", "--timeout", "60",
                    label="client") as client:  # fmt: skip
            client.expect("runner_open", timeout=60)
            run_id = client.expect("queued", timeout=60)["run_ids"]["q000"]
            t.wait_effect(lambda es: any(e.task == ids[0] for e in es), a)
            with t.worker(flow, "--concurrency", "2", label="worker-b") as b:
                wait_serving(b)
                took = sigterm_and_wait(a, timeout=30)
                print(f"\nthe busy worker drained and exited in {took:.2f} s")
                finished = client.expect("finished", timeout=60)
                assert finished["statuses"] == {"q000": "completed"}, finished
                assert client.finish() == 0, client.describe()
                assert final(t, [run_id]) == {run_id: "completed"}
                took_b = sigterm_and_wait(b, timeout=15)
                assert took_b < 5, took_b

    effects = t.effects()
    assert [(e.task, e.phase, e.pid) for e in effects] == [
        (ids[0], "start", a.pid),
        (ids[0], "finish", a.pid),
        (ids[1], "start", b.pid),
        (ids[1], "finish", b.pid),
        (ids[2], "start", b.pid),
        (ids[2], "finish", b.pid),
    ], effects
    assert took < 1.0 + 5, took  # the attempt had at most 1 s to go
    assert t.attempts(run_id) == {i: [(1, "completed")] for i in ids}
    run = t.rows("SELECT status, owner_epoch FROM runs WHERE run_id = ?", run_id)[0]
    assert run == {"status": "completed", "owner_epoch": 2}, run  # claimed, then taken over
    events = t.rows(
        "SELECT kind, detail FROM run_events WHERE run_id = ? ORDER BY event_id", run_id
    )
    assert [e["kind"] for e in events] == ["claimed", "recovered"], events
    recovered = json.loads(events[1]["detail"])
    assert owner_pid(recovered["owner"]) == b.pid, recovered
    assert owner_pid(recovered["previous_owner"]) == a.pid, recovered
    assert recovered["interrupted_tasks"] == [], recovered  # the drained attempt finished
