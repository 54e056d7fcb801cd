"""Testing workflows with pytest: fixtures and helpers, loaded as the ``cloacina`` pytest
plugin (a ``pytest11`` entry point; ``-p no:cloacina`` turns it off).

Fixtures (none is autouse; all are synchronous, so they work with pytest-asyncio in any
loop scope and with anyio):

- ``cloacina_db_url``: a fresh SQLite file per test (under ``tmp_path``, so pytest-xdist
  workers never share one). ``--cloacina-db URL`` or ``$CLOACINA_TEST_DATABASE_URL``
  name another database.
- ``cloacina_runner``: a :class:`~cloacina.Runner` on it, closed after the test; the test
  fails if a task of it is still running at teardown.
- ``cloacina_registry``: tasks and workflows defined inside the test are forgotten after
  it (and ones it redefined get their earlier definition back).

Helpers: :func:`run_task` and :func:`run_task_async` run one task body with a real
:class:`~cloacina.Context` and no database; :func:`run_workflow` runs the real engine on
a private in-memory database, with chosen tasks replaced by fakes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cloacina import Runner, RunResult, Task, TaskResult, Workflow

ENV_VAR = "CLOACINA_TEST_DATABASE_URL"

_MISSING = object()


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--cloacina-db URL``: the database the ``cloacina_*`` fixtures use."""
    group = parser.getgroup("cloacina")
    group.addoption(
        "--cloacina-db",
        default=None,
        metavar="URL",
        help=f"database for the cloacina fixtures (default: ${ENV_VAR}, else a fresh SQLite "
        "file per test)",
    )


@pytest.fixture
def cloacina_db_url(request: pytest.FixtureRequest, tmp_path: Any) -> Generator[str, None, None]:
    """A database URL of this test's own: a fresh SQLite file under ``tmp_path``, unless
    ``--cloacina-db`` or ``$CLOACINA_TEST_DATABASE_URL`` names one. A PostgreSQL URL gets a
    fresh schema per test (``cloacina_test_<random>``, named in the URL's ``options``),
    dropped after the test."""
    url = request.config.getoption("--cloacina-db") or os.environ.get(ENV_VAR)
    if not url:
        yield f"sqlite:///{tmp_path / 'cloacina-test.db'}"
        return
    url = str(url)
    if url.split(":", 1)[0].lower() not in ("postgres", "postgresql"):
        yield url
        return
    import secrets
    from urllib.parse import quote

    from cloacina import _native, backends

    schema = f"cloacina_test_{secrets.token_hex(6)}"
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options={quote('-csearch_path=' + schema, safe='')}"
    finally:
        _native.drop_postgres_schema(url, backends.mask(url), schema)


@pytest.fixture
def cloacina_runner(cloacina_db_url: str) -> Generator[Runner, None, None]:
    """A Runner on ``cloacina_db_url``, closed after the test; the test fails if one of
    its tasks is still running at teardown (a run it started and never waited for)."""
    from cloacina import Runner

    runner = Runner(cloacina_db_url)
    try:
        yield runner
        running = [
            r.run_id
            for r in runner.list_runs(status="running", limit=1000)
            if r.task_counts.get("running")
        ]
    finally:
        runner.close()
    if running:
        pytest.fail(
            f"cloacina: a task was still running at teardown (runs {', '.join(running)}); "
            "wait for the runs the test starts"
        )


@pytest.fixture
def cloacina_registry() -> Generator[None, None, None]:
    """Tasks and workflows defined in the test are forgotten after it; ones it redefined
    get their earlier definition back."""
    with _registry_kept():
        yield


class _registry_kept:
    """Restores the task and workflow definitions (native and Python) on exit."""

    def __enter__(self) -> None:
        from cloacina import _native
        from cloacina.task import _defined as tasks
        from cloacina.workflow import _defined as workflows

        self._native = _native.registry_snapshot()
        self._tasks = dict(tasks)
        self._workflows = dict(workflows)

    def __exit__(self, *exc: object) -> None:
        from cloacina import _native
        from cloacina.task import _defined as tasks
        from cloacina.workflow import _defined as workflows

        _native.registry_restore(self._native)
        tasks.clear()
        tasks.update(self._tasks)
        workflows.clear()
        workflows.update(self._workflows)


@dataclass(frozen=True, repr=False)
class TaskRun:
    """What :func:`run_task` saw: the task's :class:`~cloacina.TaskResult`, the writes it
    made (``output``) and what it returned."""

    result: TaskResult
    output: dict[str, Any] = field(default_factory=dict)
    returned: Any = None

    @property
    def status(self) -> str:
        """``completed``, ``failed`` or ``skipped``."""
        return self.result.status

    @property
    def error(self) -> str | None:
        """The exception as ``"Type: message"``, if it failed."""
        return self.result.error

    def __repr__(self) -> str:
        return f"TaskRun({self.result!r}, output keys={sorted(self.output)})"


def _input(
    context: Mapping[str, Any] | None, upstream: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """The task's input: ``context`` plus the upstream writes, as strict JSON copies."""
    data = dict(context or {})
    for writes in (upstream or {}).values():
        data.update(writes)
    import json

    # What the engine would store: the same strict JSON values, copied.
    copied: dict[str, Any] = json.loads(json.dumps(data, allow_nan=False))
    return copied


def _finish(
    task: Task,
    ctx: Any,
    given: dict[str, Any],
    returned: Any,
    error: BaseException | None,
    attempt: int,
    started: datetime,
) -> TaskRun:
    from cloacina import Skip
    from cloacina._invoke import describe_failure
    from cloacina.runner import TaskResult

    finished = datetime.now(timezone.utc)
    output: dict[str, Any] = {}
    if error is None:
        try:
            writes, touched = ctx._collect(returned, task.id)
            # As the engine does: a list or dict read and changed in place is a write;
            # one read and left as it was is not.
            changed = {k: v for k, v in touched.items() if given.get(k, _MISSING) != v}
            output = {**changed, **writes}
        except Exception as exc:
            error = exc
    if error is None:
        status, message, tb, reason = "completed", None, None, None
    elif isinstance(error, Skip):
        status, message, tb, reason = "skipped", None, None, describe_failure(error, None)[0]
    else:
        message, tb, _, _ = describe_failure(error, None)
        status, reason = "failed", None
    result = TaskResult(
        task_id=task.id,
        status=status,
        attempts=attempt,
        started_at=started,
        finished_at=finished,
        duration=finished - started,
        error=message,
        traceback=tb,
        reason=reason,
    )
    return TaskRun(result=result, output=output if status == "completed" else {}, returned=returned)


def _start(
    task: Task,
    context: Mapping[str, Any] | None,
    upstream: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], Any, datetime]:
    """``(given, ctx, started)`` for one attempt: the input as given (to tell a value
    changed in place from one only read), the task's own Context over a copy, the time."""
    from cloacina.context import Context

    given = _input(context, upstream)
    ctx = Context._wrap(_input(context, upstream), task.id, None)
    return given, ctx, datetime.now(timezone.utc)


def run_task(
    task: Task,
    context: Mapping[str, Any] | None = None,
    *,
    upstream: Mapping[str, Mapping[str, Any]] | None = None,
    attempt: int = 1,
) -> TaskRun:
    """Runs one task's body with a real Context and no database: its input is
    ``context`` plus the writes of ``upstream`` tasks (``{task_id: writes}``, merged in
    the order given). An async body runs on a new event loop (in a test that already
    has one, use :func:`run_task_async`). Exceptions are captured, as the engine
    records them, in the result. An async body called where an event loop is running
    raises ``TypeError``: await :func:`run_task_async` there."""
    import asyncio
    import inspect

    if inspect.iscoroutinefunction(task.fn) and _loop_running():
        raise TypeError(_use_async(task))
    given, ctx, started = _start(task, context, upstream)
    try:
        returned = task.fn(ctx)
        if inspect.isawaitable(returned):
            if _loop_running():
                if inspect.iscoroutine(returned):
                    returned.close()
                raise TypeError(_use_async(task))
            returned = asyncio.run(_await(returned))
    except Exception as exc:
        return _finish(task, ctx, given, None, exc, attempt, started)
    return _finish(task, ctx, given, returned, None, attempt, started)


async def run_task_async(
    task: Task,
    context: Mapping[str, Any] | None = None,
    *,
    upstream: Mapping[str, Mapping[str, Any]] | None = None,
    attempt: int = 1,
) -> TaskRun:
    """Awaitable twin of :func:`run_task`, on the caller's event loop."""
    import inspect

    given, ctx, started = _start(task, context, upstream)
    try:
        returned = task.fn(ctx)
        if inspect.isawaitable(returned):
            returned = await returned
    except Exception as exc:
        return _finish(task, ctx, given, None, exc, attempt, started)
    return _finish(task, ctx, given, returned, None, attempt, started)


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _use_async(task: Task) -> str:
    return (
        f"task '{task.id}' is async and an event loop is running here: "
        f"use 'await run_task_async(...)'"
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable


def run_workflow(
    workflow: Workflow,
    context: Mapping[str, Any] | None = None,
    *,
    replace: Mapping[str, Callable[..., Any]] | None = None,
) -> RunResult:
    """Runs ``workflow`` on the real engine, on a private in-memory database, with the
    tasks named in ``replace`` (``{task_id: fake}``) running the fake function instead
    of their own (same dependencies and options). The definitions are put back after."""
    from cloacina import Runner, Task, Workflow
    from cloacina.task import defined_task

    with _registry_kept():
        for task_id, fake in (replace or {}).items():
            original = defined_task(task_id)
            options = original.options
            Task(fake, id=task_id, dependencies=original.dependencies, **options)
        listed = Workflow(
            workflow.name, workflow.tasks, workflow.description, timeout=workflow.timeout
        )
        with Runner("sqlite::memory:") as runner:
            return runner.run(listed, context)
