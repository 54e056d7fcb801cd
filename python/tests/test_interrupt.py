"""Blocking waits release the GIL and stay interruptible."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import threading
import time

import pytest
from cloacina import CloacinaError, Workflow, task
from helpers import SCRIPTS


def test_ctrl_c_interrupts_a_blocking_run(db_url):
    with subprocess.Popen(
        [sys.executable, str(SCRIPTS / "interrupted_run.py"), db_url, "3"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "READY"
            time.sleep(0.5)  # let run() start waiting
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            line = proc.stdout.readline().strip()
            reacted = time.monotonic() - sent
            assert line == "INTERRUPTED"
            # The wait wakes for signals every 100 ms; the task itself sleeps 3 s.
            assert reacted < 2.5, f"KeyboardInterrupt took {reacted:.1f} s"
            assert proc.wait(timeout=30) == 3
        finally:
            proc.kill()


def test_wait_does_not_hold_the_gil(runner):
    @task(id="gil_sleeper")
    def gil_sleeper(ctx):
        time.sleep(0.5)

    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        runner.run(Workflow("gil_wf", [gil_sleeper]), {})
    finally:
        stop.set()
        thread.join()
    # A Python thread kept running while run() waited: many ticks, no long gap.
    assert len(ticks) > 20
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.3


def test_run_from_inside_an_async_task_raises_instead_of_deadlocking(runner):
    inner_wf = Workflow("inner_wf", [task(id="inner_t")(lambda ctx: None)])

    @task(id="calls_run")
    async def calls_run(ctx):
        runner.run(inner_wf, {})

    result = runner.run(Workflow("outer_wf", [calls_run]), {})
    assert result.status == "failed"
    assert "run_async" in result.tasks["calls_run"].error
    assert "CloacinaError" in result.tasks["calls_run"].error


def test_async_task_may_await_run_async_of_the_same_runner(runner):
    inner_wf = Workflow("inner_wf2", [task(id="inner_t2")(lambda ctx: {"inner": 1})])

    @task(id="awaits_run")
    async def awaits_run(ctx):
        res = await runner.run_async(inner_wf, {})
        return {"inner_status": res.status}

    result = runner.run(Workflow("outer_wf2", [awaits_run]), {})
    assert result.status == "completed", result.tasks["awaits_run"].error
    assert result.context["inner_status"] == "completed"


def test_handle_wait_timeout_raises_timeout_error(runner):
    @task(id="slow_t")
    def slow_t(ctx):
        time.sleep(1.0)

    handle = runner.start(Workflow("slow_wf", [slow_t]), {})
    with pytest.raises(TimeoutError):
        handle.wait(timeout=0.05)
    assert handle.wait().status == "completed"


def test_closed_runner_raises(db_url):
    from cloacina import Runner

    r = Runner(db_url)
    r.close()
    r.close()  # idempotent
    with pytest.raises(CloacinaError):
        r.run(Workflow("closed_wf", [task(id="closed_t")(lambda ctx: None)]), {})


def test_sync_task_calling_run_of_another_runner_works(runner, make_db_url):
    from cloacina import Runner

    other = Runner(make_db_url("other"))
    inner = Workflow("nested_inner", [task(id="nested_inner_t")(lambda ctx: {"v": 7})])

    @task(id="nested_outer_t")
    def outer(ctx):
        return {"v": other.run(inner, {}).context["v"]}

    try:
        result = runner.run(Workflow("nested_outer", [outer]), {})
        assert result.context["v"] == 7
    finally:
        other.close()


@pytest.mark.asyncio
async def test_run_async_and_run_interleave_on_one_loop(runner):
    wf = Workflow("interleave_wf", [task(id="interleave_t")(lambda ctx: {"x": 1})])
    results = await asyncio.gather(*[runner.run_async(wf, {}) for _ in range(20)])
    assert {r.status for r in results} == {"completed"}
