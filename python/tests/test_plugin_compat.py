"""The pytest plugin (``cloacina.testing``) with the plugins a user's suite runs it with:
pytest-asyncio in its wider loop scopes, anyio's pytest plugin, and pytest-xdist with four
workers. Each suite is written by ``pytester`` and run by pytest in a subprocess, as in
test_testing.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cloacina import Runner

INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

# The loop of the scope under test, recorded once per loop in loops.txt.
ASYNC_CONFTEST = """
import asyncio
import pytest_asyncio

KEPT = []  # every loop stays alive, so no two share an id()


@pytest_asyncio.fixture(loop_scope="{scope}", scope="{scope}")
async def shared_loop():
    loop = asyncio.get_running_loop()
    KEPT.append(loop)
    with open("loops.txt", "a") as f:
        f.write(f"{{id(loop)}}\\n")
    yield loop


@pytest_asyncio.fixture(loop_scope="{scope}")
async def started(cloacina_runner, cloacina_registry):
    # An async fixture (on the wider loop) over the plugin's sync fixtures.
    from cloacina import Workflow, task

    @task(id="from_fixture")
    async def from_fixture(ctx):
        await asyncio.sleep(0)
        return {{"fixture": asyncio.get_running_loop() is not None}}

    handle = cloacina_runner.start(Workflow("fixture_wf", [from_fixture]))
    yield handle
    assert (await handle).status == "completed"
"""

ASYNC_TESTS = """
import asyncio
import pytest
from cloacina import Workflow, task

pytestmark = pytest.mark.asyncio(loop_scope="{scope}")


def define():
    @task(id="async_step")
    async def async_step(ctx):
        await asyncio.sleep(0)
        return {{"n": ctx["n"] + 1}}

    @task(id="sync_step", dependencies=[async_step])
    def sync_step(ctx):
        return {{"m": ctx["n"] * 10}}

    return Workflow("async_wf", [async_step, sync_step])


def make(n):
    async def test(cloacina_runner, cloacina_registry, shared_loop):
        assert asyncio.get_running_loop() is shared_loop
        result = await cloacina_runner.run_async(define(), {{"n": n}})
        assert result.status == "completed", result
        assert result.context["m"] == (n + 1) * 10
        again = await cloacina_runner.start(define(), {{"n": 0}})
        assert again.status == "completed", again
        # This test's own database: only its two runs are in it.
        assert [r.run_id for r in cloacina_runner.list_runs()] == [again.run_id, result.run_id]

    return test


async def test_an_async_fixture_over_the_plugins_fixtures(started, cloacina_runner, shared_loop):
    assert asyncio.get_running_loop() is shared_loop
    result = await started
    assert result.context == {{"fixture": True}}
    assert [r.run_id for r in cloacina_runner.list_runs()] == [result.run_id]


for i in range(3):
    globals()[f"test_runs_{{i}}"] = make(i)
"""

# A sync test between the async ones: the same fixtures, the blocking API.
SYNC_TESTS = """
from cloacina import Workflow, task


def test_sync_between_async_tests(cloacina_runner, cloacina_registry):
    @task(id="plain")
    def plain(ctx):
        return {"plain": True}

    result = cloacina_runner.run(Workflow("plain_wf", [plain]))
    assert result.status == "completed" and result.context == {"plain": True}
    assert len(cloacina_runner.list_runs()) == 1
"""


@pytest.mark.parametrize(("scope", "loops"), [("module", 2), ("session", 1)])
def test_fixtures_with_pytest_asyncio_loop_scopes(
    pytester: pytest.Pytester, scope: str, loops: int
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(ASYNC_CONFTEST.format(scope=scope))
    pytester.makepyfile(
        test_async_one=ASYNC_TESTS.format(scope=scope),
        test_async_two=ASYNC_TESTS.format(scope=scope),
        test_sync=SYNC_TESTS,
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=9)
    recorded = (pytester.path / "loops.txt").read_text().split()
    # One loop per module (two modules use it) or one for the session, each the same for
    # every test of its scope (each test asserts it runs on shared_loop).
    assert len(recorded) == loops and len(set(recorded)) == loops, recorded


ANYIO_TESTS = """
import asyncio
import anyio
import pytest
from cloacina import Workflow, task

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def async_fixture(cloacina_runner, cloacina_registry):
    @task(id="anyio_fixture_task")
    async def anyio_fixture_task(ctx):
        await anyio.sleep(0)
        return {"from_fixture": True}

    yield await cloacina_runner.run_async(Workflow("anyio_fixture_wf", [anyio_fixture_task]))


def define():
    @task(id="anyio_task")
    async def anyio_task(ctx):
        await anyio.sleep(0)
        return {"n": ctx["n"] * 2}

    return Workflow("anyio_wf", [anyio_task])


async def test_run_async_under_anyio(cloacina_runner, cloacina_registry):
    result = await cloacina_runner.run_async(define(), {"n": 4})
    assert result.status == "completed" and result.context["n"] == 8
    handle = cloacina_runner.start(define(), {"n": 1})
    assert (await handle).context["n"] == 2
    assert len(cloacina_runner.list_runs()) == 2


async def test_an_anyio_async_fixture(async_fixture, cloacina_runner):
    assert async_fixture.context == {"from_fixture": True}
    assert [r.run_id for r in cloacina_runner.list_runs()] == [async_fixture.run_id]


async def test_with_a_task_group(cloacina_runner, cloacina_registry):
    results = []

    async def one(n):
        results.append(await cloacina_runner.run_async(define(), {"n": n}))

    async with anyio.create_task_group() as group:
        for n in range(3):
            group.start_soon(one, n)
    assert sorted(r.context["n"] for r in results) == [0, 2, 4]
"""


def test_fixtures_with_anyio(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_anyio=ANYIO_TESTS)
    # pytest-asyncio stays loaded (strict mode): anyio's tests are anyio's alone.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3)


XDIST_SUITE = """
import json
import os
from pathlib import Path
from cloacina import Workflow, task

SEEN = Path({seen!r})


def make(n):
    def test(cloacina_runner, cloacina_registry, cloacina_db_url):
        @task(id="xdist_task")
        def xdist_task(ctx):
            return {{"n": ctx["n"]}}

        result = cloacina_runner.run(Workflow("xdist_wf", [xdist_task]), {{"n": n}})
        assert result.status == "completed" and result.context["n"] == n
        assert [r.run_id for r in cloacina_runner.list_runs()] == [result.run_id]
        (SEEN / f"{{n}}.json").write_text(json.dumps({{
            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "url": cloacina_db_url,
            "run_id": result.run_id,
        }}))

    return test


for i in range({count}):
    globals()[f"test_{{i}}"] = make(i)
"""

XDIST_TESTS = 8


def run_under_xdist(pytester: pytest.Pytester, *args: str) -> list[dict[str, str]]:
    """Runs XDIST_SUITE with four workers; returns what each test saw."""
    seen = pytester.path / "seen"
    seen.mkdir()
    pytester.makeini(INI)
    pytester.makepyfile(test_parallel=XDIST_SUITE.format(seen=str(seen), count=XDIST_TESTS))
    result = pytester.runpytest_subprocess("-n", "4", "-q", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=XDIST_TESTS)
    records = [json.loads(p.read_text()) for p in sorted(seen.glob("*.json"))]
    assert len(records) == XDIST_TESTS
    # Four workers ran them (xdist hands each worker two tests at first) ...
    workers = {r["worker"] for r in records}
    assert len(workers) > 1 and None not in workers, workers
    # ... and no two tests had the same database.
    urls = [r["url"] for r in records]
    assert len(set(urls)) == len(urls), urls
    return records


def test_each_test_has_its_own_database_under_xdist(pytester: pytest.Pytester) -> None:
    records = run_under_xdist(pytester)
    for record in records:
        path = Path(record["url"].removeprefix("sqlite:///"))
        assert path.is_file(), record
        # The file holds that test's run and nothing else.
        with Runner(record["url"]) as runner:
            assert [r.run_id for r in runner.list_runs()] == [record["run_id"]]


@pytest.mark.postgres
def test_each_test_has_its_own_schema_under_xdist(
    pytester: pytest.Pytester, pg_server_url: str
) -> None:
    from helpers import pg_schema_exists, schema_of

    records = run_under_xdist(pytester, "--cloacina-db", pg_server_url)
    schemas = [schema_of(r["url"]) for r in records]
    assert None not in schemas and len(set(schemas)) == len(schemas), schemas
    # Each was dropped after its test.
    assert not [s for s in schemas if pg_schema_exists(pg_server_url, s)]
