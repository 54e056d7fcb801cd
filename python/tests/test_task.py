"""The @task decorator and the global task registry."""

from __future__ import annotations

import asyncio

import pytest
from cloacina import Workflow, task


def test_bare_decorator_uses_function_name_as_id():
    @task
    def extract(ctx):
        ctx["rows"] = [1, 2, 3]

    assert type(extract).__name__ == "Task"
    assert extract.id == "extract"
    assert extract.dependencies == []


def test_explicit_id_and_dependencies_become_id_strings():
    @task
    def first(ctx):
        pass

    @task(id="second_step")
    def second(ctx):
        pass

    @task(id="sum_rows", dependencies=[first, "second_step"])
    def transform(ctx):
        pass

    assert second.id == "second_step"
    assert transform.id == "sum_rows"
    assert transform.dependencies == ["first", "second_step"]
    assert all(isinstance(d, str) for d in transform.dependencies)


def test_task_is_still_callable_as_the_plain_function():
    @task
    def double(ctx):
        ctx["y"] = ctx["x"] * 2
        return "returned"

    data = {"x": 21}
    assert double(data) == "returned"
    assert data == {"x": 21, "y": 42}


def test_async_task_is_callable_as_the_plain_coroutine_function():
    @task
    async def fetch(ctx):
        await asyncio.sleep(0)
        ctx["fetched"] = True
        return 7

    assert fetch.id == "fetch"
    data: dict = {}
    assert asyncio.run(fetch(data)) == 7
    assert data == {"fetched": True}


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="bogus"):

        @task(bogus=1)
        def whatever(ctx):
            pass


def test_redefining_a_task_replaces_it_for_the_next_run(runner):
    @task(id="t")
    def t_v1(ctx):
        return 1

    first = runner.run(Workflow("redefine_wf", [t_v1]), {})
    assert first.status == "completed"
    assert first.context == {"t": 1}

    # Same id again, as when a notebook cell is edited and re-run.
    @task(id="t")
    def t_v2(ctx):
        return 2

    second = runner.run(Workflow("redefine_wf", [t_v2]), {})
    assert second.status == "completed"
    assert second.context == {"t": 2}

    # History is kept: the first run still reports what it produced.
    assert runner.get_run(first.run_id).context == {"t": 1}


def test_redefined_workflow_name_runs_its_new_task_list(runner):
    @task(id="old_only")
    def old_only(ctx):
        ctx["old"] = True

    @task(id="new_only")
    def new_only(ctx):
        ctx["new"] = True

    old_run = runner.run(Workflow("renamed_tasks_wf", [old_only]), {})
    new_run = runner.run(Workflow("renamed_tasks_wf", [new_only]), {})

    assert set(new_run.tasks) == {"new_only"}
    assert new_run.context == {"new": True}
    assert set(runner.get_run(old_run.run_id).tasks) == {"old_only"}
