"""Failures show where the user looks: a failed run's printed exception holds the failing
task's traceback, a missing context key says why it is missing, and a task may return
its own Context."""

from __future__ import annotations

import pickle
import sys
import traceback

import pytest
from cloacina import Context, Runner, Workflow, WorkflowFailed, task
from cloacina.context import ContextKeyError
from helpers import eventually

# --- raise_for_status shows the failing task's traceback -------------------------------


def test_raise_for_status_prints_the_failing_tasks_traceback(runner):
    @task
    def shown_ok(ctx):
        return {"fine": True}

    @task(dependencies=[shown_ok])
    def shown_boom(ctx):
        raise ValueError("boom")

    result = runner.run(Workflow("shown_boom_wf", [shown_ok, shown_boom]), {})
    with pytest.raises(WorkflowFailed) as info:
        result.raise_for_status()
    exc = info.value
    # The attributes stay as they were.
    assert exc.task_id == "shown_boom"
    assert exc.error == "ValueError: boom"
    assert 'raise ValueError("boom")' in exc.traceback
    # What a terminal or a notebook prints holds the task's failing line and its id.
    printed = "".join(traceback.format_exception(exc))
    assert 'raise ValueError("boom")' in printed
    assert "task 'shown_boom'" in printed
    assert "in shown_boom" in printed
    assert printed.rstrip().endswith("ValueError: boom")
    if sys.version_info >= (3, 11):
        assert len(exc.__notes__) == 1
        assert exc.__notes__[0].startswith("task 'shown_boom' failed; its traceback:\n")
        assert str(exc).startswith(f"run {result.run_id} of workflow 'shown_boom_wf' failed")
        assert "Traceback" not in str(exc)


def test_raise_for_status_names_every_failed_task_and_counts_attempts(runner):
    @task(retries=1, retry_delay=0.01)
    def shown_first(ctx):
        raise RuntimeError("first broke")

    @task
    def shown_second(ctx):
        raise KeyError("second")

    result = runner.run(Workflow("shown_two_wf", [shown_first, shown_second]), {})
    assert list(result.tasks) == ["shown_first", "shown_second"]
    with pytest.raises(WorkflowFailed) as info:
        result.raise_for_status()
    exc = info.value
    assert exc.task_id == "shown_first"
    printed = "".join(traceback.format_exception(exc))
    assert "task 'shown_first' failed after 2 attempts; its traceback:" in printed
    assert 'raise RuntimeError("first broke")' in printed
    assert "also failed: 'shown_second' (KeyError: 'second')" in printed


def test_raise_for_status_on_python_3_10_puts_the_traceback_in_the_message(runner, monkeypatch):
    @task
    def shown_boom_310(ctx):
        raise ValueError("boom")

    result = runner.run(Workflow("shown_boom_310_wf", [shown_boom_310]), {})
    # What Python 3.10 (which has no exception notes) takes.
    monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    with pytest.raises(WorkflowFailed) as info:
        result.raise_for_status()
    monkeypatch.undo()
    exc = info.value
    assert not hasattr(exc, "__notes__")
    assert str(exc).startswith(f"run {result.run_id} of workflow 'shown_boom_310_wf' failed")
    assert "task 'shown_boom_310' failed; its traceback:\n" in str(exc)
    assert 'raise ValueError("boom")' in "".join(traceback.format_exception(exc))
    assert exc.task_id == "shown_boom_310"


# --- a missing key says why it is missing -----------------------------------------------


def _c_error(result):
    c = result.tasks["c"]
    assert c.status == "failed", (c.status, result.error)
    return c.error


def test_missing_key_written_by_a_task_that_is_not_an_ancestor(runner, rows):
    @task(id="a")
    def a(ctx):
        ctx["x"] = 1

    @task(id="b")
    def b(ctx):
        ctx["y"] = 2

    @task(id="c", dependencies=["a"])
    def c(ctx):
        # b runs in parallel with a and c: wait until its output is committed.
        eventually(
            lambda: rows("SELECT status FROM run_tasks WHERE task_id = 'b'"),
            lambda r: r == [{"status": "completed"}],
        )
        return {"z": ctx["y"]}

    result = runner.run(Workflow("not_an_ancestor_wf", [a, b, c]), {"input": 0})
    assert _c_error(result) == (
        "ContextKeyError: task 'c' reads key 'y', which task 'b' wrote, but 'b' is not a "
        "dependency of 'c': a task sees the run's input and what its ancestors wrote; add "
        "'b' to c's dependencies"
    )
    assert result.tasks["c"].attempts == 1


def test_missing_key_in_an_async_task_names_the_writer(runner, rows):
    @task(id="a")
    def a(ctx):
        ctx["x"] = 1

    @task(id="b")
    def b(ctx):
        ctx["y"] = 2

    @task(id="c", dependencies=["a"])
    async def c(ctx):
        import asyncio

        for _ in range(500):
            if rows("SELECT status FROM run_tasks WHERE task_id = 'b'") == [
                {"status": "completed"}
            ]:
                break
            await asyncio.sleep(0.02)
        return {"z": ctx["y"]}

    result = runner.run(Workflow("not_an_ancestor_async_wf", [a, b, c]), {})
    assert "which task 'b' wrote, but 'b' is not a dependency of 'c'" in _c_error(result)


def test_missing_key_nobody_wrote_lists_the_context(runner):
    @task(id="a")
    def a(ctx):
        ctx["x"] = 1

    @task(id="c", dependencies=["a"])
    def c(ctx):
        return {"z": ctx["y"]}

    result = runner.run(Workflow("nobody_wrote_wf", [a, c]), {"a": 0})
    assert _c_error(result) == (
        "ContextKeyError: task 'c' reads key 'y', which is not in its context (it holds: a, x)"
    )


def test_missing_key_lists_at_most_ten_keys(runner):
    @task(id="c")
    def c(ctx):
        return {"z": ctx["nope"]}

    data = {f"k{i:02}": i for i in range(15)}
    result = runner.run(Workflow("many_keys_wf", [c]), data)
    assert _c_error(result) == (
        "ContextKeyError: task 'c' reads key 'nope', which is not in its context (it holds: "
        "k00, k01, k02, k03, k04, k05, k06, k07, k08, k09 and 5 more)"
    )


def test_missing_key_is_a_key_error_with_a_readable_message(runner):
    @task(id="c")
    def c(ctx):
        try:
            ctx["y"]
        except KeyError as exc:
            return {
                "type": type(exc).__name__,
                "key": exc.key,
                "args0": exc.args[0],
                "str": str(exc),
                "chained": exc.__suppress_context__,
            }
        return {"type": None}

    result = runner.run(Workflow("is_key_error_wf", [c]), {})
    assert result.status == "completed", result.error
    assert result.context == {
        "type": "ContextKeyError",
        "key": "y",
        "args0": "y",
        "str": "task 'c' reads key 'y', which is not in its context (it is empty)",
        "chained": True,
    }


@pytest.mark.sqlite_only(":memory:")
def test_missing_key_on_an_in_memory_database_names_the_writer_too():
    @task(id="a")
    def a(ctx):
        ctx["x"] = 1

    @task(id="b", dependencies=["a"])
    def b(ctx):
        ctx["y"] = 2

    @task(id="c", dependencies=["a"])
    def c(ctx):
        return {"z": ctx["y"]}

    # c runs after b: one slot, and b comes first in the topological order.
    with Runner("sqlite::memory:", max_concurrency=1) as memory_runner:
        result = memory_runner.run(Workflow("in_memory_wf", [a, b, c]), {})
    assert result.tasks["b"].status == "completed"
    # The writer is found through the engine, which reads an in-memory database too.
    assert "which task 'b' wrote, but 'b' is not a dependency of 'c'" in _c_error(result)


def test_get_and_in_still_do_not_raise(runner):
    @task(id="c")
    def c(ctx):
        return {"get": ctx.get("y", "dflt"), "in": "y" in ctx}

    result = runner.run(Workflow("get_in_wf", [c]), {})
    assert result.context == {"get": "dflt", "in": False}


def test_context_key_error_outside_a_run():
    ctx = Context({"b": 1, "a": 2})
    with pytest.raises(ContextKeyError) as info:
        ctx["c"]
    assert str(info.value) == "key 'c' is not in the context (it holds: a, b)"
    assert isinstance(info.value, KeyError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (type(copy), str(copy), copy.key) == (ContextKeyError, str(info.value), "c")


# --- a task may return its own Context ----------------------------------------------------


def test_returning_its_own_context_keeps_the_writes(runner, rows):
    @task
    def returns_ctx(ctx):
        ctx["x"] = 1
        return ctx

    @task(dependencies=[returns_ctx])
    async def returns_ctx_async(ctx):
        ctx["y"] = ctx["x"] + 1
        return ctx

    result = runner.run(Workflow("returns_ctx_wf", [returns_ctx, returns_ctx_async]), {"i": 0})
    assert result.status == "completed", result.error
    assert result.context == {"i": 0, "x": 1, "y": 2}
    outputs = {
        r["task_id"]: r["output"]
        for r in rows("SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id)
    }
    assert outputs == {"returns_ctx": '{"x":1}', "returns_ctx_async": '{"y":2}'}
