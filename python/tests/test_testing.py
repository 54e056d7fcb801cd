"""The pytest plugin (``cloacina.testing``), tested as a user's suite would use it: test
files written by ``pytester`` and run by pytest in a subprocess."""

from __future__ import annotations

import pytest

USER_SUITE = """
import asyncio
import time
import pytest
from cloacina import Fail, Skip, Workflow, task
from cloacina.testing import run_task, run_task_async, run_workflow


def test_runner_runs_a_workflow(cloacina_runner, cloacina_registry):
    @task(id="extract")
    def extract(ctx):
        return {"rows": [1, 2, 3]}

    @task(id="total", dependencies=[extract])
    def total(ctx):
        return {"total": sum(ctx["rows"])}

    result = cloacina_runner.run(Workflow("etl", [extract, total]))
    assert result.status == "completed" and result.context["total"] == 6


def test_each_test_has_its_own_database(cloacina_db_url, tmp_path):
    assert cloacina_db_url == f"sqlite:///{tmp_path / 'cloacina-test.db'}"


def test_tasks_defined_in_a_test_do_not_leak_part_one(cloacina_registry):
    @task(id="leaky")
    def leaky(ctx):
        return None

    Workflow("leaky_wf", [leaky])


def test_tasks_defined_in_a_test_do_not_leak_part_two(cloacina_registry):
    from cloacina import WorkflowError

    @task(id="needs_leaky", dependencies=["leaky"])
    def needs_leaky(ctx):
        return None

    with pytest.raises(WorkflowError, match="leaky"):
        Workflow("uses_leaky", [needs_leaky])


def test_run_task_without_a_database(cloacina_registry):
    @task(id="double")
    def double(ctx):
        ctx["doubled"] = ctx["n"] * 2
        return {"seen": ctx["from_parent"]}

    run = run_task(double, {"n": 4}, upstream={"parent": {"from_parent": "p"}})
    assert run.status == "completed"
    assert run.output == {"doubled": 8, "seen": "p"}

    @task(id="appends")
    def appends(ctx):
        ctx["items"].append(3)  # changed in place: a write
        len(ctx["other"])  # only read: not a write

    run = run_task(appends, {"items": [1, 2], "other": [0]})
    assert run.output == {"items": [1, 2, 3]}

    @task(id="fails")
    def fails(ctx):
        raise Fail("nope")

    failed = run_task(fails, attempt=2)
    assert failed.status == "failed" and failed.error == "Fail: nope"
    assert failed.result.attempts == 2 and "raise Fail" in failed.result.traceback

    @task(id="skips")
    def skips(ctx):
        raise Skip("nothing to do")

    skipped = run_task(skips)
    assert skipped.status == "skipped" and skipped.result.reason == "nothing to do"


@pytest.mark.asyncio
async def test_run_task_async_on_the_tests_loop(cloacina_registry):
    @task(id="async_body")
    async def async_body(ctx):
        await asyncio.sleep(0)
        return {"loop": "same"}

    run = await run_task_async(async_body)
    assert run.output == {"loop": "same"}


@pytest.mark.asyncio
async def test_run_task_on_an_async_body_inside_a_loop_says_to_use_run_task_async(
    cloacina_registry,
):
    @task(id="async_in_loop")
    async def async_in_loop(ctx):
        return {"x": 1}

    with pytest.raises(TypeError, match=r"async_in_loop.*run_task_async"):
        run_task(async_in_loop)
    # Outside a loop, run_task runs it on a loop of its own.
    run = await asyncio.to_thread(run_task, async_in_loop)
    assert run.status == "completed" and run.output == {"x": 1}


def test_run_workflow_keeps_the_workflows_timeout(cloacina_registry):
    @task(id="slow_step")
    def slow_step(ctx):
        time.sleep(2)

    wf = Workflow("slow_flow", [slow_step], timeout=0.3)
    result = run_workflow(wf, {}, replace={"slow_step": lambda ctx: time.sleep(2)})
    assert result.status == "failed"
    assert "timed out" in (result.error or "")


def test_run_workflow_with_a_fake(cloacina_registry):
    @task(id="fetch")
    def fetch(ctx):
        raise ConnectionError("no network in tests")

    @task(id="count", dependencies=[fetch])
    def count(ctx):
        return {"count": len(ctx["items"])}

    wf = Workflow("fetcher", [fetch, count])
    result = run_workflow(wf, {}, replace={"fetch": lambda ctx: {"items": [1, 2]}})
    assert result.status == "completed" and result.context["count"] == 2
    # The real definition is back afterwards.
    assert run_task(fetch).status == "failed"


def test_async_fixture_use(cloacina_runner, cloacina_registry):
    @task(id="a_task")
    async def a_task(ctx):
        return {"ok": True}

    async def main():
        return await cloacina_runner.run_async(Workflow("async_wf", [a_task]))

    assert asyncio.run(main()).status == "completed"
"""

LEFT_RUNNING = """
import time
from cloacina import Workflow, task


def test_forgets_to_wait(cloacina_runner):
    @task(id="slow_one")
    def slow_one(ctx):
        time.sleep(2)

    cloacina_runner.start(Workflow("slow_wf", [slow_one]))
    time.sleep(0.3)
"""


def test_a_users_suite_with_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_SUITE)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=10)


PG_SUITE = """
from cloacina import Workflow, task

def test_one(cloacina_runner, cloacina_db_url):
    assert "search_path" in cloacina_db_url

    @task(id="pg_plugin_task")
    def t(ctx):
        ctx["done"] = True

    assert cloacina_runner.run(Workflow("pg_plugin_wf", [t])).context == {"done": True}
    assert len(cloacina_runner.list_runs()) == 1

def test_two_sees_a_fresh_schema(cloacina_runner):
    assert cloacina_runner.list_runs() == []
"""


@pytest.mark.postgres
def test_the_plugin_gives_each_test_a_schema_on_postgresql(
    pytester: pytest.Pytester, pg_server_url: str
) -> None:
    from helpers import pg_query

    pytester.makepyfile(test_pg=PG_SUITE)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", "--cloacina-db", pg_server_url
    )
    result.assert_outcomes(passed=2)
    # Both schemas were dropped after their tests.
    left = pg_query(
        pg_server_url, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'cloacina_test_%'"
    )
    assert left == []


def test_a_task_still_running_at_teardown_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_left=LEFT_RUNNING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*a task was still running at teardown*"])


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_off="def test_no_fixture(cloacina_runner):\n    pass\n",
    )
    result = pytester.runpytest_subprocess("-p", "no:cloacina", "-q")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'cloacina_runner' not found*"])


def test_fixtures_are_named_cloacina_and_none_is_autouse(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_list="def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--fixtures", "-q")
    text = result.stdout.str()
    for name in ("cloacina_db_url", "cloacina_runner", "cloacina_registry"):
        assert name in text
    pytester.makepyfile(
        test_auto="def test_y(request):\n"
        "    assert not [f for f in request.fixturenames if f.startswith('cloacina')]\n"
    )
    assert pytester.runpytest_subprocess("-q", "test_auto.py").ret == 0


def test_runner_fixture_setup_and_teardown_are_quick(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_speed="".join(f"def test_{i}(cloacina_runner):\n    pass\n" for i in range(5))
    )
    result = pytester.runpytest_subprocess("-q", "--durations=0", "--durations-min=0")
    result.assert_outcomes(passed=5)
    phases: dict[str, float] = {}
    for line in result.stdout.lines:
        parts = line.split()
        if len(parts) == 3 and parts[1] in ("setup", "teardown") and parts[0].endswith("s"):
            phases[parts[2] + parts[1]] = float(parts[0][:-1])
    per_test = [
        phases.get(f"test_speed.py::test_{i}setup", 0.0)
        + phases.get(f"test_speed.py::test_{i}teardown", 0.0)
        for i in range(5)
    ]
    assert len(phases) == 10, result.stdout.lines
    # The budget is 50 ms on SQLite (about 20 ms measured); this bound leaves room for
    # a loaded CI machine and a debug build.
    assert sorted(per_test)[2] < 0.25, per_test


XDIST_SUITE = """
from cloacina import Workflow, task


def make(n):
    def test(cloacina_runner, cloacina_registry, cloacina_db_url):
        @task(id="shared_id")
        def body(ctx):
            return {"n": ctx["n"]}

        result = cloacina_runner.run(Workflow("shared_wf", [body]), {"n": n})
        assert result.status == "completed" and result.context["n"] == n
        # Each worker's test has a file of its own: only its own run is in it.
        assert [r.run_id for r in cloacina_runner.list_runs()] == [result.run_id]
        print("DB", cloacina_db_url)

    return test


for i in range(8):
    globals()[f"test_{i}"] = make(i)
"""


def test_works_under_pytest_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_parallel=XDIST_SUITE)
    result = pytester.runpytest_subprocess("-n", "2", "-q", "-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8)
