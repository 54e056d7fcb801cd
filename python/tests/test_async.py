"""async def tasks, and using the runner from asyncio code."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from cloacina import RunResult, Workflow, task
from helpers import intervals_overlap


def test_async_tasks_run(runner):
    @task
    async def fetch(ctx):
        await asyncio.sleep(0.01)
        ctx["fetched"] = ctx["url"].upper()

    @task(dependencies=[fetch])
    async def parse(ctx):
        await asyncio.sleep(0)
        return {"length": len(ctx["fetched"])}

    @task(dependencies=[parse])
    async def label(ctx):
        return f"len={ctx['length']}"

    result = runner.run(Workflow("async_chain_wf", [fetch, parse, label]), {"url": "abc"})
    assert result.status == "completed", result.error
    assert result.context == {"url": "abc", "fetched": "ABC", "length": 3, "label": "len=3"}
    assert all(t.status == "completed" and t.attempts == 1 for t in result.tasks.values())


def test_mixed_sync_and_async_tasks(runner):
    @task
    def sync_start(ctx):
        ctx["values"] = [1, 2]

    @task(dependencies=[sync_start])
    async def async_middle(ctx):
        await asyncio.sleep(0.01)
        ctx["values"] = [*ctx["values"], 3]

    @task(dependencies=[sync_start])
    def sync_side(ctx):
        return {"side": len(ctx["values"])}

    @task(dependencies=[async_middle, sync_side])
    async def async_end(ctx):
        return sum(ctx["values"]) + ctx["side"]

    wf = Workflow("mixed_wf", [sync_start, async_middle, sync_side, async_end])
    result = runner.run(wf, {})
    assert result.status == "completed", result.error
    assert result.context == {"values": [1, 2, 3], "side": 2, "async_end": 8}


def test_async_tasks_overlap(runner, rows):
    @task
    async def nap_a(ctx):
        await asyncio.sleep(0.5)
        ctx["a"] = 1

    @task
    async def nap_b(ctx):
        await asyncio.sleep(0.5)
        ctx["b"] = 1

    @task(dependencies=[nap_a, nap_b])
    async def after_naps(ctx):
        ctx["both"] = ctx["a"] + ctx["b"]

    result = runner.run(Workflow("async_overlap_wf", [nap_a, nap_b, after_naps]), {})
    assert result.status == "completed", result.error
    assert result.context["both"] == 2
    times = {
        r["task_id"]: (r["started_at"], r["finished_at"])
        for r in rows("SELECT * FROM run_tasks WHERE run_id = ?", result.run_id)
    }
    assert intervals_overlap(times["nap_a"], times["nap_b"]), times


def test_sync_and_async_tasks_overlap_each_other(runner, rows):
    @task
    def sync_nap(ctx):
        time.sleep(0.5)

    @task
    async def async_nap(ctx):
        await asyncio.sleep(0.5)

    result = runner.run(Workflow("cross_overlap_wf", [sync_nap, async_nap]), {})
    assert result.status == "completed", result.error
    times = {
        r["task_id"]: (r["started_at"], r["finished_at"])
        for r in rows("SELECT * FROM run_tasks WHERE run_id = ?", result.run_id)
    }
    assert intervals_overlap(times["sync_nap"], times["async_nap"]), times


@pytest.mark.asyncio
async def test_sync_run_inside_a_running_event_loop(runner):
    @task
    async def inner_async(ctx):
        await asyncio.sleep(0.01)
        ctx["a"] = 1

    @task(dependencies=[inner_async])
    def inner_sync(ctx):
        ctx["b"] = ctx["a"] + 1

    asyncio.get_running_loop()  # this test body runs inside a loop
    result = runner.run(Workflow("run_in_loop_wf", [inner_async, inner_sync]), {})
    assert result.status == "completed", result.error
    assert result.context == {"a": 1, "b": 2}


@pytest.mark.asyncio
async def test_run_async_returns_the_result(runner):
    @task
    async def ra_first(ctx):
        await asyncio.sleep(0.01)
        ctx["x"] = ctx["start"] * 2

    @task(dependencies=[ra_first])
    def ra_second(ctx):
        return ctx["x"] + 1

    result = await runner.run_async(Workflow("run_async_wf", [ra_first, ra_second]), {"start": 5})
    assert isinstance(result, RunResult)
    assert result.status == "completed", result.error
    assert result.context == {"start": 5, "x": 10, "ra_second": 11}
    assert runner.get_run(result.run_id).status == "completed"


def gated_workflow(name: str, gate: threading.Event) -> Workflow:
    """A task that only finishes once the caller's event loop has run something else."""

    @task(id=f"{name}_gated")
    def gated(ctx):
        if not gate.wait(20):
            raise RuntimeError("the caller's event loop was blocked")
        ctx["gated"] = True

    return Workflow(name, [gated])


@pytest.mark.asyncio
async def test_run_async_does_not_block_the_event_loop(runner):
    gate = threading.Event()
    pending = asyncio.ensure_future(runner.run_async(gated_workflow("gate_wf", gate), {}))
    await asyncio.sleep(0.05)  # the loop must be free to get here while the run is going
    gate.set()
    result = await asyncio.wait_for(pending, timeout=60)
    assert result.status == "completed", result.error


@pytest.mark.asyncio
async def test_await_handle(runner):
    gate = threading.Event()
    handle = runner.start(gated_workflow("await_handle_wf", gate), {"via": "handle"})
    waiter = asyncio.ensure_future(_await(handle))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    gate.set()
    result = await asyncio.wait_for(waiter, timeout=60)
    assert isinstance(result, RunResult)
    assert result.run_id == handle.run_id
    assert result.status == "completed", result.error
    assert result.context == {"via": "handle", "gated": True}


async def _await(handle):
    return await handle


@pytest.mark.asyncio
async def test_many_run_async_calls_at_once(runner):
    @task
    async def square(ctx):
        await asyncio.sleep(0.01)
        return ctx["n"] * ctx["n"]

    wf = Workflow("gather_wf", [square])
    results = await asyncio.wait_for(
        asyncio.gather(*(runner.run_async(wf, {"n": n}) for n in range(20))), timeout=100
    )
    assert [r.context["square"] for r in results] == [n * n for n in range(20)]
    assert len({r.run_id for r in results}) == 20
    assert all(r.status == "completed" for r in results)


@pytest.mark.asyncio
async def test_async_task_failure_inside_run_async(runner):
    @task
    async def async_boom(ctx):
        await asyncio.sleep(0)
        raise ValueError("async boom 7")

    result = await runner.run_async(Workflow("async_fail_wf", [async_boom]), {})
    assert result.status == "failed"
    tr = result.tasks["async_boom"]
    assert tr.status == "failed"
    assert "async boom 7" in tr.error
    assert "Traceback" in tr.traceback
    assert 'raise ValueError("async boom 7")' in tr.traceback
