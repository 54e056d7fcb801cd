"""Cancellation: from a handle, a second runner, another process, asyncio and Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from cloacina import CloacinaError, Runner, Workflow, WorkflowFailed, rules, task
from helpers import SCRIPTS, busy_thread, eventually, run_script

_started: dict[str, threading.Event] = {}
_started_lock = threading.Lock()


def _started_event(task_id: str) -> threading.Event:
    with _started_lock:
        return _started.setdefault(task_id, threading.Event())


def body_started(task_id: str) -> None:
    """Called first by a long body, so that wait_running knows the body itself runs."""
    _started_event(task_id).set()


def wait_running(runner, run_id: str, *task_ids: str, timeout: float = 10.0):
    """Waits until every task in task_ids is stored as running and its body has started;
    returns the run. The stored status is committed before the body reaches its thread,
    so a cancel right after it may find the body not started (and then never starts it)."""
    run = eventually(
        lambda: runner.get_run(run_id),
        lambda r: r is not None and all(r.tasks[t].status == "running" for t in task_ids),
        timeout=timeout,
    )
    for task_id in task_ids:
        assert _started_event(task_id).wait(timeout), f"the body of {task_id} never started"
        with _started_lock:
            _started.pop(task_id, None)
    return run


def long_async_workflow(name: str, cancelled: threading.Event | None = None) -> Workflow:
    """first -> long (async, 10 s) -> after; plus cleanup (all_done) after long."""

    @task(id="first")
    def first(ctx):
        return {"first": True}

    @task(id="long", dependencies=[first])
    async def long(ctx):
        body_started("long")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            if cancelled is not None:
                cancelled.set()
            raise
        return {"long": True}

    @task(id="after", dependencies=[long])
    def after(ctx):
        return {"after": True}

    @task(id="cleanup", dependencies=[long], trigger=rules.all_done())
    def cleanup(ctx):
        return {"cleanup": True}

    return Workflow(name, [after, cleanup])


def assert_cancelled(result):
    assert result.status == "cancelled", (result.status, result.error)
    assert result.tasks["first"].status == "completed"
    for tid in ("long", "after", "cleanup"):
        t = result.tasks[tid]
        assert t.status == "cancelled", (tid, t.status)
        assert t.reason and "cancel" in t.reason, (tid, t.reason)
    assert result.context == {"first": True}
    assert result.finished_at is not None


def test_cancel_from_the_handle(runner, rows):
    async_cancelled = threading.Event()
    release = threading.Event()
    sync_returned = threading.Event()
    sync_stopped = threading.Event()

    @task(id="first")
    def first(ctx):
        return {"first": True}

    @task(id="long", dependencies=[first])
    async def long(ctx):
        body_started("long")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            async_cancelled.set()
            raise

    @task(id="sync_long", dependencies=[first])
    def sync_long(ctx):
        body_started("sync_long")
        try:
            while not release.wait(0.01):
                pass
            sync_returned.set()
        except BaseException:
            sync_stopped.set()  # interrupted where it runs
            raise
        return {"sync_long": True}

    @task(id="after", dependencies=[long])
    def after(ctx):
        return {"after": True}

    @task(id="cleanup", dependencies=[long, sync_long], trigger=rules.all_done())
    def cleanup(ctx):
        return {"cleanup": True}

    handle = runner.start(Workflow("cancel_handle_wf", [after, cleanup]), {})
    try:
        wait_running(runner, handle.run_id, "long", "sync_long")
        begin = time.monotonic()
        assert handle.cancel() is True
        result = handle.wait(timeout=10)
        elapsed = time.monotonic() - begin
        # The run ends at once: it does not wait for the sync body still running.
        assert not sync_returned.is_set()
        # The sync body is stopped in its thread (it loops on until released), not
        # waited for.
        assert sync_stopped.wait(5)
    finally:
        release.set()
    assert elapsed < 2.0, elapsed
    assert_cancelled(result)
    assert result.tasks["sync_long"].status == "cancelled"
    assert handle.status() == "cancelled"
    # The async body was cancelled.
    assert async_cancelled.wait(5)

    assert not sync_returned.is_set()
    time.sleep(0.3)
    again = runner.get_run(handle.run_id)
    assert again.status == "cancelled"
    assert again.tasks["sync_long"].status == "cancelled"
    assert "sync_long" not in again.context
    assert again.context == {"first": True}

    # Already final: nothing to cancel.
    assert handle.cancel() is False
    assert runner.cancel(handle.run_id) is False

    [run] = rows("SELECT status, error, finished_at FROM runs WHERE run_id = ?", handle.run_id)
    assert run["status"] == "cancelled"
    assert run["finished_at"] is not None
    statuses = {
        r["task_id"]: r["status"]
        for r in rows("SELECT task_id, status FROM run_tasks WHERE run_id = ?", handle.run_id)
    }
    assert statuses == {
        "first": "completed",
        "long": "cancelled",
        "sync_long": "cancelled",
        "after": "cancelled",
        "cleanup": "cancelled",
    }


def test_cancelled_run_raise_for_status(runner):
    cancelled = threading.Event()
    handle = runner.start(long_async_workflow("cancel_raise_wf", cancelled), {})
    wait_running(runner, handle.run_id, "long")
    handle.cancel()
    result = handle.wait(timeout=10)
    assert cancelled.wait(5)
    with pytest.raises(CloacinaError) as exc:
        result.raise_for_status()
    assert not isinstance(exc.value, WorkflowFailed)
    assert "cancelled" in str(exc.value)
    assert not result.ok


def test_cancel_unknown_or_final_runs_returns_false(runner):
    assert runner.cancel("no-such-run") is False

    @task(id="instant")
    def instant(ctx):
        return {"instant": True}

    @task(id="broken")
    def broken(ctx):
        raise ValueError("broken")

    done = runner.run(Workflow("instant_wf", [instant]), {})
    failed = runner.run(Workflow("broken_wf", [broken]), {})
    assert done.status == "completed"
    assert failed.status == "failed"
    assert runner.cancel(done.run_id) is False
    assert runner.cancel(failed.run_id) is False
    assert runner.get_run(done.run_id).status == "completed"
    assert runner.get_run(failed.run_id).status == "failed"


def test_cancel_from_a_second_runner_on_the_same_file(runner, db_url):
    cancelled = threading.Event()
    handle = runner.start(long_async_workflow("cancel_second_wf", cancelled), {})
    wait_running(runner, handle.run_id, "long")
    with Runner(db_url) as other:
        begin = time.monotonic()
        assert other.cancel(handle.run_id) is True
        result = handle.wait(timeout=10)
        elapsed = time.monotonic() - begin
        # The owner carries the request out within a fraction of a second.
        assert elapsed < 1.5, elapsed
        assert_cancelled(result)
        seen = other.get_run(handle.run_id)
        assert seen.status == "cancelled"
        assert other.cancel(handle.run_id) is False
    assert cancelled.wait(5)


def test_cancel_from_another_process(runner, db_url, tmp_path):
    cancelled = threading.Event()
    handle = runner.start(long_async_workflow("cancel_process_wf", cancelled), {})
    wait_running(runner, handle.run_id, "long")
    proc = run_script("cancel_run.py", db_url, handle.run_id, cwd=tmp_path)
    assert json.loads(proc.stdout) == {"cancelled": True, "unknown": False}
    result = handle.wait(timeout=10)
    assert_cancelled(result)
    assert cancelled.wait(5)


def test_cancel_a_run_owned_by_another_process(runner, db_url, tmp_path, rows):
    with subprocess.Popen(
        [sys.executable, str(SCRIPTS / "cancellable_run.py"), db_url, "60"],
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline().split()
            assert line[0] == "RUN", line
            run_id = line[1]
            eventually(
                lambda: rows(
                    "SELECT status FROM run_tasks WHERE run_id = ? AND task_id = 'owned_long'",
                    run_id,
                ),
                lambda r: r and r[0]["status"] == "running",
            )
            begin = time.monotonic()
            assert runner.cancel(run_id) is True
            out, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - begin
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert elapsed < 10, elapsed
    ended = json.loads(out)
    assert ended["status"] == "cancelled"
    assert ended["tasks"] == {
        "owned_first": "completed",
        "owned_long": "cancelled",
        "owned_after": "cancelled",
    }
    assert ended["context"] == {"first": True}
    assert runner.get_run(run_id).status == "cancelled"
    [run] = rows("SELECT status FROM runs WHERE run_id = ?", run_id)
    assert run["status"] == "cancelled"


def test_ctrl_c_cancels_the_run_then_raises(db_url, tmp_path, rows):
    with subprocess.Popen(
        [sys.executable, str(SCRIPTS / "ctrl_c_run.py"), db_url, "60"],
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            line = proc.stdout.readline().split()
            assert line[:1] == ["RUN"], (line, proc.stderr.read() if proc.poll() else "")
            run_id = line[1]
            eventually(
                lambda: rows(
                    "SELECT status FROM run_tasks WHERE run_id = ? AND task_id = 'long_sleep'",
                    run_id,
                ),
                lambda r: r and r[0]["status"] == "running",
            )
            time.sleep(0.2)  # run() is waiting
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            reacted = time.monotonic() - sent
        finally:
            proc.kill()
    assert out.strip() == "INTERRUPTED", (out, err)
    assert proc.returncode == 3, err
    # The 60 s task was cancelled, not waited for.
    assert reacted < 10, reacted

    [run] = rows("SELECT status, finished_at FROM runs WHERE run_id = ?", run_id)
    assert run["status"] == "cancelled"
    assert run["finished_at"] is not None
    statuses = {
        r["task_id"]: r["status"]
        for r in rows("SELECT task_id, status FROM run_tasks WHERE run_id = ?", run_id)
    }
    assert statuses == {"announce": "completed", "long_sleep": "cancelled"}
    with Runner(db_url) as fresh:
        result = fresh.get_run(run_id)
        assert result.status == "cancelled"
        assert result.tasks["long_sleep"].status == "cancelled"


def test_cancel_a_run_waiting_for_a_retry(runner):
    calls = []

    @task(id="retry_later", retries=3, retry_delay=0.5)
    def retry_later(ctx):
        calls.append(1)
        raise ValueError("later")

    handle = runner.start(Workflow("cancel_retry_wf", [retry_later]), {})
    waiting = eventually(
        lambda: runner.get_run(handle.run_id),
        lambda r: r.tasks["retry_later"].status == "ready" and r.tasks["retry_later"].attempts,
    )
    assert waiting.tasks["retry_later"].next_attempt_at is not None
    assert handle.cancel() is True
    result = handle.wait(timeout=10)
    t = result.tasks["retry_later"]
    assert result.status == "cancelled"
    assert t.status == "cancelled"
    assert t.attempts == 1
    assert t.next_attempt_at is None
    # The scheduled retry never happens.
    time.sleep(0.8)
    assert len(calls) == 1
    assert runner.get_run(handle.run_id).tasks["retry_later"].attempts == 1


def test_cancel_one_run_leaves_the_others(runner):
    cancelled = threading.Event()
    wf = long_async_workflow("cancel_one_wf", cancelled)

    @task(id="short_one")
    async def short_one(ctx):
        await asyncio.sleep(0.3)
        return {"short": True}

    other_wf = Workflow("not_cancelled_wf", [short_one])
    victim = runner.start(wf, {})
    survivor = runner.start(other_wf, {})
    wait_running(runner, victim.run_id, "long")
    assert victim.cancel() is True
    assert victim.wait(timeout=10).status == "cancelled"
    assert cancelled.wait(5)
    assert survivor.wait(timeout=10).status == "completed"

    # The runner goes on working after a cancellation.
    @task(id="after_cancel")
    def after_cancel(ctx):
        return {"fine": True}

    assert runner.run(Workflow("after_cancel_wf", [after_cancel]), {}).status == "completed"


@pytest.mark.asyncio
async def test_cancel_async(runner):
    cancelled = threading.Event()
    handle = runner.start(long_async_workflow("cancel_async_wf", cancelled), {})
    for _ in range(500):
        run = runner.get_run(handle.run_id)
        if run.tasks["long"].status == "running":
            break
        await asyncio.sleep(0.02)
    # The stored status is committed before the body starts: wait for the body itself.
    assert await asyncio.to_thread(_started_event("long").wait, 10)
    with _started_lock:
        _started.pop("long", None)
    assert await runner.cancel_async(handle.run_id) is True
    result = await asyncio.wait_for(handle, timeout=10)
    assert_cancelled(result)
    assert await runner.cancel_async(handle.run_id) is False
    assert await runner.cancel_async("no-such-run") is False
    assert cancelled.wait(5)


@pytest.mark.asyncio
async def test_cancelling_run_async_cancels_the_run(runner):
    cancelled = threading.Event()
    wf = long_async_workflow("cancel_run_async_wf", cancelled)
    job = asyncio.ensure_future(runner.run_async(wf, {}))
    run_id = None
    for _ in range(500):
        runs = runner.list_runs(wf)
        if runs and runs[0].tasks["long"].status == "running":
            run_id = runs[0].run_id
            break
        await asyncio.sleep(0.02)
    assert run_id is not None
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    result = eventually(
        lambda: runner.get_run(run_id), lambda r: r.status in ("completed", "failed", "cancelled")
    )
    assert_cancelled(result)
    assert cancelled.wait(5)


@pytest.mark.asyncio
async def test_cancelling_run_async_while_it_submits_still_cancels_the_run(runner):
    """The caller is cancelled before the submission returned: the run it created must
    not go on running unwatched."""
    wf = long_async_workflow("cancel_submitting_wf", None)
    job = asyncio.ensure_future(runner.run_async(wf, {}))
    await asyncio.sleep(0)  # run_async has started submitting
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    [summary] = eventually(lambda: runner.list_runs(wf), lambda runs: len(runs) == 1)
    result = eventually(
        lambda: runner.get_run(summary.run_id),
        lambda r: r.status in ("completed", "failed", "cancelled"),
    )
    assert result.status == "cancelled", result.status


def test_cancel_a_run_still_waiting_for_a_slot(db_url):
    ran = []
    hog_cancelled = threading.Event()

    @task(id="hog")
    async def hog(ctx):
        body_started("hog")
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            hog_cancelled.set()
            raise

    @task(id="queued")
    def queued(ctx):
        ran.append(1)
        return {"queued": True}

    with Runner(db_url, max_concurrency=1) as one_slot:
        hogging = one_slot.start(Workflow("hog_wf", [hog]), {})
        wait_running(one_slot, hogging.run_id, "hog")
        waiting = one_slot.start(Workflow("queued_wf", [queued]), {})
        time.sleep(0.1)
        assert one_slot.get_run(waiting.run_id).tasks["queued"].status in ("pending", "ready")
        assert waiting.cancel() is True
        result = waiting.wait(timeout=10)
        assert result.status == "cancelled"
        assert result.tasks["queued"].status == "cancelled"
        assert result.tasks["queued"].attempts == 0
        assert hogging.cancel() is True
        assert hogging.wait(timeout=10).status == "cancelled"
        assert hog_cancelled.wait(5)
        # The freed slot is not given to the cancelled run's task.
        time.sleep(0.2)
        assert ran == []


def test_cancel_right_after_start_on_a_new_runner(make_db_url):
    """The first async task of a new Runner, cancelled at once: its coroutine must be
    cancelled (or never start), not run to its end after the run ended 'cancelled'."""
    started: set[int] = set()
    finished: set[int] = set()

    @task(id="first_async")
    async def first_async(ctx):
        started.add(ctx["i"])
        await asyncio.sleep(0.3)
        finished.add(ctx["i"])
        return {"finished": True}

    wf = Workflow("first_async_wf", [first_async])
    # Another busy Python thread competes for the GIL, as other work in the process would.
    with busy_thread():
        for i in range(12):
            with Runner(make_db_url(f"new_runner_{i}")) as fresh:
                handle = fresh.start(wf, {"i": i})
                assert handle.cancel() is True
                result = handle.wait(timeout=10)
                assert result.status == "cancelled"
                assert result.tasks["first_async"].status == "cancelled"
        # close() has let every running attempt end: whatever is still uncancelled
        # has run to its end by now.
    assert finished == set(), (
        f"{len(finished)} of {len(started)} started coroutines (of 12 cancelled runs) "
        "were not cancelled and ran to their end"
    )
