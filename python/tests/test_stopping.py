"""Stopping work: a cancelled run's sync bodies stop where they run and free their slots
at once, a body blocked outside Python is named in a warning, close() stops what runs
instead of waiting for it, and cancelling an await is what it says."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from cloacina import Runner, TaskInterrupted, Workflow, task
from helpers import eventually


def test_cancel_frees_the_slot_at_once_and_stops_the_body(db_url):
    steps: list[int] = []
    stopped = threading.Event()

    @task(id="looping")
    def looping(ctx):
        try:
            for i in range(3000):  # 30 s if never stopped
                steps.append(i)
                time.sleep(0.01)
        except TaskInterrupted:
            stopped.set()
            raise

    @task(id="trivial")
    def trivial(ctx):
        return {"ok": True}

    with Runner(db_url, max_concurrency=1) as runner:
        handle = runner.start(Workflow("loop_wf", [looping]))
        eventually(lambda: len(steps), lambda n: n > 5)
        assert handle.cancel() is True
        begin = time.monotonic()
        assert runner.run(Workflow("trivial_wf", [trivial])).status == "completed"
        assert time.monotonic() - begin < 2.0, "the cancelled run's slot was not freed"
        assert stopped.wait(5)
        count = len(steps)
        time.sleep(0.3)
        assert len(steps) == count, "the body went on after it was stopped"


def test_a_body_blocked_outside_python_is_named_in_a_warning(runner, caplog):
    @task(id="blocked_in_c")
    def blocked_in_c(ctx):
        time.sleep(2.5)  # one call into C: cannot be interrupted before it returns

    with caplog.at_level(logging.WARNING, logger="cloacina"):
        handle = runner.start(Workflow("blocked_wf", [blocked_in_c]))
        eventually(
            lambda: runner.get_run(handle.run_id).tasks["blocked_in_c"].status,
            lambda s: s == "running",
        )
        time.sleep(0.1)
        assert handle.cancel() is True
        assert handle.wait(timeout=5).status == "cancelled"
        messages = eventually(
            lambda: [r.getMessage() for r in caplog.records],
            lambda ms: any("blocked_in_c" in m and "still running" in m for m in ms),
            timeout=5,
        )
    assert any("discarded" in m for m in messages), messages


def test_close_stops_running_attempts_instead_of_waiting(db_url):
    started = threading.Event()
    stopped = threading.Event()

    @task(id="long_runner")
    def long_runner(ctx):
        started.set()
        try:
            for _ in range(3000):  # 30 s if never stopped
                time.sleep(0.01)
        except TaskInterrupted:
            stopped.set()
            raise

    wf = Workflow("close_wf", [long_runner])
    runner = Runner(db_url)
    handle = runner.start(wf)
    assert started.wait(10)
    begin = time.monotonic()
    runner.close()
    assert time.monotonic() - begin < 3.0
    assert stopped.wait(5)
    # The run was left for the next runner: it continues it (the stopped attempt is
    # recorded as interrupted and runs again).

    @task(id="long_runner")
    def long_runner_quick(ctx):
        return {"done": True}

    Workflow("close_wf", [long_runner_quick])
    with Runner(db_url) as again:
        result = eventually(
            lambda: again.get_run(handle.run_id),
            lambda r: r.status == "completed",
            timeout=20,
        )
        assert result.context == {"done": True}
        assert [e["kind"] for e in result.events].count("recovered") == 1


@pytest.mark.asyncio
async def test_cancelling_an_await_of_a_handle_only_stops_waiting(runner):
    @task(id="slow_async")
    async def slow_async(ctx):
        await asyncio.sleep(0.5)
        return {"slow": True}

    handle = runner.start(Workflow("await_wf", [slow_async]))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(handle, 0.05)
    result = await handle
    assert result.status == "completed" and result.context == {"slow": True}


@pytest.mark.asyncio
async def test_cancelling_run_async_cancels_the_run(runner):
    @task(id="slower_async")
    async def slower_async(ctx):
        await asyncio.sleep(5)

    wf = Workflow("cancel_async_wf", [slower_async])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(runner.run_async(wf), 0.3)
    [run] = runner.list_runs(workflow="cancel_async_wf")
    final = eventually(lambda: runner.get_run(run.run_id), lambda r: r.status == "cancelled")
    assert final.tasks["slower_async"].status == "cancelled"
