"""Queued runs: a submit-only runner (max_concurrency=0) queues runs, engines that define
the workflow claim them; purge deletes finished runs. On both backends."""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from datetime import timedelta

import pytest
from cloacina import CloacinaError, Context, Runner, Workflow, task
from helpers import execute


def _workflow(name: str, calls: list[str] | None = None) -> Workflow:
    @task(id=f"{name}_a")
    def a(ctx: Context) -> None:
        if calls is not None:
            calls.append("a")
        ctx["a"] = 1

    @task(id=f"{name}_b", dependencies=[f"{name}_a"])
    def b(ctx: Context) -> None:
        if calls is not None:
            calls.append("b")
        ctx["b"] = ctx["a"] + 1

    return Workflow(name, [a, b])


def test_a_submit_only_runner_queues_and_a_runner_defining_the_workflow_claims(db_url, rows):
    calls: list[str] = []
    wf = _workflow("queued_wf", calls)
    with Runner(db_url, max_concurrency=0) as client:
        handle = client.start(wf, {"x": 1})
        # Nobody serves yet: the run waits, queued, its tasks pending.
        time.sleep(0.3)
        assert handle.status() == "queued"
        assert [r.status for r in client.list_runs()] == ["queued"]
        assert {r["status"] for r in rows("SELECT status FROM run_tasks")} == {"pending"}
        assert calls == []
        with Runner(db_url, max_concurrency=2) as worker:
            result = handle.wait(timeout=30)
            assert result.status == "completed"
            assert result.context == {"x": 1, "a": 1, "b": 2}
            assert calls == ["a", "b"]
            assert [e["kind"] for e in result.events] == ["claimed"]
            assert worker.get_run(handle.run_id).status == "completed"
        # run() waits for whoever drives the run, as it would for its own.
        with Runner(db_url, max_concurrency=1):
            assert client.run(wf, {"x": 2}).context["b"] == 2


def test_a_submit_only_runner_queues_a_failed_run_to_be_resumed_by_a_worker(db_url, rows):
    calls: list[str] = []
    broken = {"yes": True}

    @task(id="requeue_a")
    def a(ctx: Context) -> None:
        calls.append("a")
        ctx["a"] = 1

    @task(id="requeue_b", dependencies=[a])
    def b(ctx: Context) -> None:
        calls.append("b")
        if broken["yes"]:
            raise ValueError("not yet")
        ctx["b"] = ctx["a"] + 1

    wf = Workflow("requeue_wf", [a, b])
    with Runner(db_url, max_concurrency=0) as client:
        with Runner(db_url, max_concurrency=2):
            failed = client.run(wf)
        assert failed.status == "failed" and calls == ["a", "b"]
        broken["yes"] = False
        handle = client.resume(failed.run_id)  # nobody serves: it waits, queued
        assert handle.status() == "queued"
        assert client.get_run(failed.run_id).error is None
        time.sleep(0.2)
        assert calls == ["a", "b"]
        with Runner(db_url, max_concurrency=2):
            result = handle.wait(timeout=30)
        assert result.status == "completed", result.error
        assert result.context == {"a": 1, "b": 2}
        assert calls == ["a", "b", "b"]  # the completed task kept its output
        assert result.tasks["requeue_a"].attempts == 1
        assert result.tasks["requeue_b"].attempts == 2
        kinds = [e["kind"] for e in result.events]
        assert kinds[-2:] == ["resume_requested", "resumed"]
        # Only a failed or cancelled run is queued again.
        with pytest.raises(CloacinaError, match="already completed"):
            client.resume(failed.run_id)
        with pytest.raises(CloacinaError, match="no run with id 'nope'"):
            client.resume("nope")


def test_a_queued_run_is_cancelled_at_once(db_url, rows):
    wf = _workflow("cancel_queued_wf")
    with Runner(db_url, max_concurrency=0) as client:
        handle = client.start(wf, {})
        assert client.cancel(handle.run_id) is True
        result = handle.wait(timeout=10)
        assert result.status == "cancelled"
        assert {t.status for t in result.tasks.values()} == {"cancelled"}
        # Cancelled before anyone claimed it: a worker opened now leaves it alone.
        with Runner(db_url, max_concurrency=1) as worker:
            time.sleep(0.5)
            assert worker.get_run(handle.run_id).status == "cancelled"


def test_runs_of_a_workflow_not_defined_here_stay_queued(db_url):
    wf = _workflow("defined_wf")
    with Runner(db_url, max_concurrency=0) as client:
        handle = client.start(wf, {})
    # Another process's workflow: simulated by renaming the run's workflow in the store.
    with Runner(db_url, max_concurrency=0) as client:
        other = client.get_run(handle.run_id)
        assert other is not None and other.status == "queued"
    execute(
        db_url, "UPDATE runs SET workflow = 'not_defined_anywhere' WHERE run_id = ?", handle.run_id
    )
    with Runner(db_url, max_concurrency=2) as worker:
        time.sleep(1.0)
        assert worker.get_run(handle.run_id).status == "queued"


def test_a_worker_claims_no_more_runs_than_its_max_concurrency(db_url):
    started, release = threading.Event(), threading.Event()
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    @task(id="slow_claim")
    def slow(ctx: Context) -> None:
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        started.set()
        release.wait(30)
        with lock:
            running["now"] -= 1

    wf = Workflow("slow_claim_wf", [slow])
    with Runner(db_url, max_concurrency=0) as client:
        handles = [client.start(wf, {"i": i}) for i in range(5)]
        with Runner(db_url, max_concurrency=2) as worker:
            assert started.wait(30)
            time.sleep(0.5)
            statuses = sorted(h.status() for h in handles)
            assert statuses == ["queued", "queued", "queued", "running", "running"]
            release.set()
            assert all(h.wait(timeout=30).status == "completed" for h in handles)
            assert running["most"] == 2
            assert worker.list_runs(status="queued") == []


def test_a_worker_out_of_room_claims_the_next_queued_run_as_soon_as_one_ends(db_url):
    """Not at its next background check (every 0.5 s on PostgreSQL, every 2 s on SQLite):
    the gaps between one run's end and the next one's claim are milliseconds."""
    wf = _workflow("backlog_wf")
    with Runner(db_url, max_concurrency=0) as client:
        handles = [client.start(wf, {"i": i}) for i in range(9)]
        with Runner(db_url, max_concurrency=1):
            results = [h.wait(timeout=60) for h in handles]
    assert [r.status for r in results] == ["completed"] * 9
    spans = sorted((r.started_at, r.finished_at) for r in results)
    gaps = [(later[0] - earlier[1]).total_seconds() for earlier, later in itertools.pairwise(spans)]
    assert statistics.median(gaps) < 0.1, gaps


def test_a_submit_only_runner_cannot_serve(db_url):
    with Runner(db_url, max_concurrency=0) as client:
        with pytest.raises(CloacinaError, match="only submits runs"):
            client.serve()


def test_serve_claims_until_the_runner_is_closed(db_url):
    wf = _workflow("served_wf")
    worker = Runner(db_url, max_concurrency=2)
    serving = threading.Thread(target=worker.serve)  # no signal handlers off the main thread
    serving.start()
    try:
        with Runner(db_url, max_concurrency=0) as client:
            assert client.run(wf, {}).status == "completed"
    finally:
        worker.close()
        serving.join(10)
    assert not serving.is_alive()


def test_purge_deletes_finished_runs_and_nothing_else(db_url, rows):
    wf = _workflow("purged_wf")
    with Runner(db_url, max_concurrency=0) as client:
        queued = client.start(wf, {})
    with Runner(db_url, max_concurrency=2, recover=False) as runner:
        done = [runner.run(wf, {"i": i}) for i in range(3)]
        assert runner.purge(older_than=timedelta(days=1)) == 0
        time.sleep(0.01)
        assert runner.purge(older_than=0) == 3
        for result in done:
            assert runner.get_run(result.run_id) is None
        assert runner.get_run(queued.run_id).status == "queued"
        assert rows("SELECT count(*) AS n FROM run_tasks")[0]["n"] == 2  # the queued run's
        assert runner.purge(older_than=0) == 0
        with pytest.raises(ValueError, match="older_than"):
            runner.purge(older_than=-1)
