"""Runs started while attempts of other runs are running. On PostgreSQL the caller then
commits the new run itself, beside the scheduler's batch in flight, and hands it to the
scheduler (a start no longer waits behind that batch): the run must behave exactly as
one submitted through the scheduler (its rows, its completion, cancel, idempotency)."""

from __future__ import annotations

import logging
import threading

from cloacina import Runner, Workflow, task
from helpers import wait_all

BESIDE = "committed by its submitter"

gate = threading.Event()
entered = threading.Event()


@task(id="busy_hold")
def busy_hold(ctx):
    entered.set()
    gate.wait(30)
    ctx["held"] = True


@task(id="busy_a")
def busy_a(ctx):
    ctx["n"] = ctx["n"] + 1


@task(id="busy_b", dependencies=["busy_a"])
def busy_b(ctx):
    ctx["n"] = ctx["n"] * 10


@task(id="busy_slow")
def busy_slow(ctx):
    gate.wait(30)


HOLD = Workflow("busy_hold_wf", [busy_hold])
CHAIN = Workflow("busy_chain_wf", [busy_a, busy_b])
SLOW = Workflow("busy_slow_wf", [busy_slow])


def hold(runner: Runner):
    """Starts a run whose one attempt runs until `gate` is set."""
    gate.clear()
    entered.clear()
    handle = runner.start(HOLD)
    assert entered.wait(10)
    return handle


def beside(caplog) -> set[str]:
    """Ids of the runs whose caller committed them beside the scheduler's batches."""
    return {r.getMessage().split()[1] for r in caplog.records if BESIDE in r.getMessage()}


def test_runs_started_while_others_run_complete_with_their_rows(db_url, backend, rows, caplog):
    caplog.set_level(logging.DEBUG, logger="cloacina")
    with Runner(db_url, max_concurrency=4) as runner:
        held = hold(runner)
        handles = [runner.start(CHAIN, {"n": i}) for i in range(20)]
        results = wait_all(handles, 30)
        gate.set()
        assert held.wait(10).status == "completed"
    assert [r.status for r in results] == ["completed"] * 20
    assert [r.context["n"] for r in results] == [(i + 1) * 10 for i in range(20)]
    ids = {h.run_id for h in handles}
    for run_id in ids:
        tasks = rows("SELECT task_id, status, attempts FROM run_tasks WHERE run_id = ?", run_id)
        assert sorted((t["task_id"], t["status"], t["attempts"]) for t in tasks) == [
            ("busy_a", "completed", 1),
            ("busy_b", "completed", 1),
        ]
        (run,) = rows("SELECT status, owner FROM runs WHERE run_id = ?", run_id)
        assert (run["status"], run["owner"]) == ("completed", None)
    if backend == "postgres":
        # The path under test was taken: every run started while the first one ran.
        assert beside(caplog) == ids
    else:
        assert beside(caplog) == set()


def test_a_run_started_while_others_run_can_be_cancelled_at_once(db_url, caplog):
    caplog.set_level(logging.DEBUG, logger="cloacina")
    with Runner(db_url, max_concurrency=1) as runner:
        held = hold(runner)
        # No free slot: the new run's attempt waits, and the cancel reaches the
        # scheduler right behind the hand-over of the run.
        slow = runner.start(SLOW)
        assert runner.cancel(slow.run_id) is True
        assert slow.wait(10).status == "cancelled"
        gate.set()
        assert held.wait(10).status == "completed"
        assert runner.get_run(slow.run_id).status == "cancelled"


def test_one_idempotency_key_started_at_once_from_many_threads_while_others_run(db_url, rows):
    """Callers racing on one key, each past the lookup before any insert: the database
    keeps one run, and every caller gets its id."""
    with Runner(db_url, max_concurrency=4) as runner:
        held = hold(runner)
        barrier = threading.Barrier(8)
        handles: list = []

        def start() -> None:
            barrier.wait(10)
            handles.append(runner.start(CHAIN, {"n": 1}, idempotency_key="busy-key"))

        threads = [threading.Thread(target=start) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(handles) == 8
        assert len({h.run_id for h in handles}) == 1
        assert all(h.wait(10).context["n"] == 20 for h in handles)
        gate.set()
        assert held.wait(10).status == "completed"
    assert len(rows("SELECT run_id FROM runs WHERE idempotency_key = ?", "busy-key")) == 1
    assert len(rows("SELECT run_id FROM runs WHERE workflow = ?", "busy_chain_wf")) == 1


def test_runs_started_while_others_run_are_driven_by_the_starting_runner(db_url, rows):
    """While it drives runs, a runner's new run is its own from the first commit: owned
    by it (never queued for another engine to claim) and leased."""
    with Runner(db_url, max_concurrency=2) as runner:
        held = hold(runner)
        slow = runner.start(SLOW)
        (row,) = rows(
            "SELECT status, owner, lease_expires_at FROM runs WHERE run_id = ?", slow.run_id
        )
        (held_row,) = rows("SELECT owner FROM runs WHERE run_id = ?", held.run_id)
        assert row["status"] == "running"
        assert row["owner"] == held_row["owner"] is not None
        assert row["lease_expires_at"] is not None
        gate.set()
        assert slow.wait(10).status == "completed"
        assert held.wait(10).status == "completed"
