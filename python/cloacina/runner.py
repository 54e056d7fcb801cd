"""``Runner``: runs workflows durably, from plain code, asyncio and notebooks alike."""

from __future__ import annotations

import atexit
import functools
import logging
import signal
import threading
import weakref
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from cloacina import _invoke, _native, backends
from cloacina._durations import seconds
from cloacina._loop import BackgroundLoop
from cloacina.errors import CloacinaError, ConfigurationError, WorkflowFailed
from cloacina.workflow import Workflow

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

DEFAULT_MAX_CONCURRENCY = 8
"""Task attempts a runner runs at once unless told otherwise."""


def _time(micros: int | None) -> datetime | None:
    # Positional timedelta: about a third cheaper than the keyword form.
    return None if micros is None else _EPOCH + timedelta(0, 0, micros)


def _span(start: datetime | None, end: datetime | None) -> timedelta | None:
    return None if start is None or end is None else end - start


@dataclass(frozen=True)
class Attempt:
    """One finished attempt of a task."""

    attempt: int
    status: str
    """``completed | failed``"""
    started_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    error: str | None
    traceback: str | None


_T = TypeVar("_T")
_new = object.__new__
_set = object.__setattr__


def _adopt(cls: type[_T], fields: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` whose ``__dict__`` is ``fields`` (which
    holds every field, in order). Skips the generated ``__init__``, which sets each field
    with its own ``object.__setattr__`` call: a run's result holds hundreds of these."""
    obj = _new(cls)
    _set(obj, "__dict__", fields)
    return obj


def _task_result(t: dict[str, Any]) -> TaskResult:
    """A task's dict from the native layer (``TaskResult`` fields, times in integer
    microseconds) as a ``TaskResult``; converts the dict in place."""
    start, end = t["started_at"], t["finished_at"]
    started, finished = _time(start), _time(end)
    duration = _span(started, finished)
    t["started_at"], t["finished_at"], t["duration"] = started, finished, duration
    history = t["history"]
    for i, a in enumerate(history):
        if a["started_at"] == start and a["finished_at"] == end:
            # The latest attempt: the task's own times, converted once.
            a["started_at"], a["finished_at"], a["duration"] = started, finished, duration
        else:
            a_started, a_finished = _time(a["started_at"]), _time(a["finished_at"])
            a["started_at"], a["finished_at"] = a_started, a_finished
            a["duration"] = _span(a_started, a_finished)
        history[i] = _adopt(Attempt, a)
    if t["next_attempt_at"] is not None:
        t["next_attempt_at"] = _time(t["next_attempt_at"])
    return _adopt(TaskResult, t)


@dataclass(frozen=True, repr=False)
class TaskResult:
    """What happened to one task of a run."""

    task_id: str
    status: str
    """``pending | ready | running | completed | failed | skipped | upstream_failed |
    cancelled``: ``skipped`` means chosen not to run (a trigger rule, or ``Skip`` raised
    by the task); ``upstream_failed`` that it could not run because a task upstream
    failed."""
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    error: str | None
    """The exception as ``"Type: message"`` (or why the engine failed the task)."""
    traceback: str | None
    reason: str | None = None
    """Why the task was skipped, ``upstream_failed`` (naming the task that failed) or
    cancelled."""
    history: list[Attempt] = field(default_factory=list)
    """Every finished attempt, oldest first."""
    next_attempt_at: datetime | None = None
    """When a scheduled retry may start."""
    hook_errors: list[dict[str, Any]] = field(default_factory=list)
    """What the task's hooks raised: ``{"hook", "attempt", "error"}`` each."""
    dependencies: list[str] = field(default_factory=list)
    """The tasks it depended on, as the run was planned."""

    def __repr__(self) -> str:
        parts = [repr(self.task_id), self.status]
        if self.attempts != 1:
            parts.append(f"attempts={self.attempts}")
        if self.duration is not None:
            parts.append(_seconds_text(self.duration))
        if self.error:
            parts.append(_first_line(self.error))
        elif self.reason:
            parts.append(_first_line(self.reason))
        return f"TaskResult({', '.join(parts)})"


def _seconds_text(span: timedelta) -> str:
    """A duration the way people read it: ``12 ms``, ``3.4 s``."""
    seconds = span.total_seconds()
    return f"{seconds * 1000:.3g} ms" if seconds < 1 else f"{seconds:.3g} s"


def _first_line(text: str, limit: int = 120) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _counts_text(counts: Mapping[str, int]) -> str:
    """``{"completed": 3, "failed": 1}`` as ``3 completed, 1 failed``."""
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no tasks"


def _context_text(context: Mapping[str, Any], keys: int = 8) -> str:
    """A context's keys with the size of each value as JSON (the first ``keys``)."""
    import json

    def size(value: Any) -> str:
        try:
            n = len(json.dumps(value))
        except (TypeError, ValueError):
            return "?"
        return f"{n} B" if n < 1000 else f"{n / 1000:.3g} kB" if n < 1e6 else f"{n / 1e6:.3g} MB"

    shown = [f"{k}: {size(v)}" for k, v in list(context.items())[:keys]]
    if len(context) > keys:
        shown.append(f"... {len(context) - keys} more")
    return "{" + ", ".join(shown) + "}"


@dataclass(frozen=True, repr=False)
class RunResult:
    """A run as recorded in the database."""

    run_id: str
    workflow: str
    status: str
    """``completed | failed | cancelled``, or ``pending | running`` while it goes on."""
    context: dict[str, Any]
    tasks: dict[str, TaskResult]
    started_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    error: str | None
    version: str = ""
    created_at: datetime | None = field(default=None, repr=False)
    events: list[dict[str, Any]] = field(default_factory=list, repr=False)
    """What happened to the run beyond its tasks: ``{"at", "kind", "detail"}`` each, with
    kind ``recovered``, ``resumed``, ``interrupted`` or ``version_mismatch``."""
    idempotency_key: str | None = field(default=None, repr=False)

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> RunResult:
        tasks = {t["task_id"]: _task_result(t) for t in raw["tasks"]}
        started, finished = _time(raw["started_at"]), _time(raw["finished_at"])
        return cls(
            run_id=raw["run_id"],
            workflow=raw["workflow"],
            status=raw["status"],
            context=raw["context"],
            tasks=tasks,
            started_at=started,
            finished_at=finished,
            duration=_span(started, finished),
            error=raw["error"],
            version=raw["version"],
            created_at=_time(raw["created_at"]),
            events=[{**e, "at": _time(e["at"])} for e in raw["events"]],
            idempotency_key=raw["idempotency_key"],
        )

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook shows a status header, the DAG coloured by task status, the tasks'
        table (errors with their tracebacks folded) and a timeline of the attempts; only
        the short text where live progress already left that display in the same cell."""
        from cloacina import _display, _progress

        if _progress.shown_in_this_cell(self):
            return {"text/plain": repr(self)}
        return {"text/html": _display.run_html(self), "text/plain": repr(self)}

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == "completed"

    def __repr__(self) -> str:
        """A short summary, never the whole context: status, duration, task counts and
        the context's keys with their sizes."""
        counts: dict[str, int] = {}
        for t in self.tasks.values():
            counts[t.status] = counts.get(t.status, 0) + 1
        duration = f", {_seconds_text(self.duration)}" if self.duration is not None else ""
        error = f", error={_first_line(self.error)!r}" if self.error else ""
        return (
            f"RunResult({self.run_id!r}, workflow={self.workflow!r}, {self.status}{duration}, "
            f"tasks: {_counts_text(counts)}, context: {_context_text(self.context)}{error})"
        )

    def raise_for_status(self) -> RunResult:
        """Returns ``self`` if the run completed; raises :class:`WorkflowFailed` if it failed
        (carrying the first failed task's ``task_id``, ``error`` and ``traceback``) or
        :class:`CloacinaError` if it was cancelled or is still going.

        The printed :class:`WorkflowFailed` (in a terminal or a notebook) shows the failed
        task's own traceback, and names the other tasks that failed: as exception notes
        on Python 3.11 and later, at the end of the message on 3.10."""
        if self.status == "completed":
            return self
        if self.status == "failed":
            import sys  # always loaded; imported here to keep this method self-contained

            all_failed = [t for t in self.tasks.values() if t.status == "failed"]
            failed = all_failed[0] if all_failed else None
            message = f"run {self.run_id} of workflow '{self.workflow}' failed: {self.error}"
            notes = []
            if failed is not None and failed.traceback:
                after = f" after {failed.attempts} attempts" if failed.attempts > 1 else ""
                notes.append(
                    f"task '{failed.task_id}' failed{after}; its traceback:\n"
                    + failed.traceback.rstrip()
                )
            if len(all_failed) > 1:
                notes.append(
                    "also failed: "
                    + "; ".join(f"'{t.task_id}' ({t.error})" for t in all_failed[1:])
                )
            if sys.version_info < (3, 11):
                message = "\n\n".join([message, *notes])
            exc = WorkflowFailed(message)
            if sys.version_info >= (3, 11):
                for note in notes:
                    exc.add_note(note)
            exc.run_id = self.run_id  # type: ignore[attr-defined]
            exc.task_id = failed.task_id if failed else None  # type: ignore[attr-defined]
            exc.error = failed.error if failed else self.error  # type: ignore[attr-defined]
            exc.traceback = failed.traceback if failed else None  # type: ignore[attr-defined]
            raise exc
        raise CloacinaError(f"run {self.run_id} of workflow '{self.workflow}' is {self.status}")


@dataclass(frozen=True, repr=False)
class RunSummary:
    """A run as :meth:`Runner.list_runs` lists it: its row and how many of its tasks are
    in each status, read without its context or task outputs (listing costs the same
    whatever the runs hold). :meth:`result` (and ``context``, ``tasks``, ``events``)
    reads the whole run on first use."""

    run_id: str
    workflow: str
    version: str
    status: str
    error: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration: timedelta | None
    idempotency_key: str | None
    task_counts: dict[str, int]
    """``status -> number of tasks``."""
    _runner: Runner = field(compare=False)
    _loaded: list[RunResult] = field(default_factory=list, compare=False)

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any], runner: Runner) -> RunSummary:
        started, finished = _time(raw["started_at"]), _time(raw["finished_at"])
        return cls(
            run_id=raw["run_id"],
            workflow=raw["workflow"],
            version=raw["version"],
            status=raw["status"],
            error=raw["error"],
            created_at=_time(raw["created_at"]),
            started_at=started,
            finished_at=finished,
            duration=_span(started, finished),
            idempotency_key=raw["idempotency_key"],
            task_counts=raw["task_counts"],
            _runner=runner,
        )

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status == "completed"

    def result(self) -> RunResult:
        """The whole run (context, tasks, events), read once and kept."""
        if not self._loaded:
            self._loaded.append(self._runner._get_existing(self.run_id))
        return self._loaded[0]

    @property
    def context(self) -> dict[str, Any]:
        """The run's context (reads the whole run)."""
        return self.result().context

    @property
    def tasks(self) -> dict[str, TaskResult]:
        """The run's tasks (reads the whole run)."""
        return self.result().tasks

    @property
    def events(self) -> list[dict[str, Any]]:
        """The run's events (reads the whole run)."""
        return self.result().events

    def __repr__(self) -> str:
        duration = f", {_seconds_text(self.duration)}" if self.duration is not None else ""
        return (
            f"RunSummary({self.run_id!r}, workflow={self.workflow!r}, {self.status}{duration}, "
            f"tasks: {_counts_text(self.task_counts)})"
        )


def _existing(run_id: str, raw: Mapping[str, Any] | None) -> RunResult:
    """The result of run ``run_id`` read as ``raw``: a run that was waited for or known
    to exist, so its absence is an error."""
    if raw is None:
        raise CloacinaError(f"no run with id '{run_id}'")
    return RunResult._from_native(raw)


class RunHandle:
    """A run started with :meth:`Runner.start`. Await it, or call :meth:`wait`."""

    __slots__ = ("_runner", "run_id")

    def __init__(self, runner: Runner, run_id: str) -> None:
        self._runner = runner
        self.run_id = run_id

    def status(self) -> str:
        """The run's status now, from the database (one row: cheap to poll)."""
        status = self._runner._engine_or_raise().run_status(self.run_id)
        if status is None:
            raise CloacinaError(f"no run with id '{self.run_id}'")
        return status

    def cancel(self) -> bool:
        """Cancels the run (see :meth:`Runner.cancel`)."""
        return self._runner.cancel(self.run_id)

    def wait(self, timeout: float | None = None) -> RunResult:
        """Blocks until the run is final and returns its result; ``TimeoutError`` if
        ``timeout`` seconds pass first. Ctrl-C interrupts the wait.

        A run that ended in this runner is returned as the runner committed its end,
        without reading it back from the database (the first wait after its end; later
        ones, and runs driven elsewhere, read it)."""
        if timeout is not None:
            timeout = seconds("wait timeout", timeout)
        engine = self._runner._engine_or_raise()
        if not engine.wait(self.run_id, timeout, self._runner._waiting_from_own_task()):
            raise TimeoutError(f"run {self.run_id} did not finish within {timeout} s")
        return self._runner._ended(self.run_id)

    async def _wait_async(self) -> RunResult:
        engine = self._runner._engine_or_raise()
        await engine.wait_async(self.run_id, self._runner._waiting_from_own_task())
        return _existing(self.run_id, await engine.ended_run_async(self.run_id))

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self._wait_async().__await__()

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"


def _writer_lookup(ref: weakref.ref[Runner]) -> Callable[[str, str, str], str | None]:
    """``lookup(run_id, task_id, key)`` for :func:`_invoke.register_database`, reading
    through the runner's engine while it is open (a weak reference: it keeps no runner
    alive)."""

    def lookup(run_id: str, task_id: str, key: str) -> str | None:
        runner = ref()
        engine = None if runner is None else runner._engine
        return None if engine is None else engine.writer_of(run_id, task_id, key)

    return lookup


def _warn_if_another_runner_is_open(runner: Runner) -> None:
    """Logs a warning when another open runner of this process uses the same database
    file: each has its own engine, threads and checks. Usually the old one of a notebook
    cell run again; it closes itself once nothing references it. A submit-only runner
    (``max_concurrency=0``) beside one that drives runs is a deliberate pair: no warning."""
    if runner._path is None or runner.max_concurrency == 0:
        return
    for other in list(_open_runners):
        if (
            other is not runner
            and other._engine is not None
            and other._path == runner._path
            and other.max_concurrency > 0
        ):
            # The text, not the runner, goes into the record: a kept record must not
            # keep the old runner alive.
            logging.getLogger("cloacina").warning(
                "another Runner on %s is already open in this process (%s); close it, or "
                "reuse it: each runner has its own engine and threads",
                runner._path,
                repr(other),
            )
            return


_logging_level: list[int | None] = [None]


def _follow_logging_level() -> None:
    """The engine caches Python's logger levels (no log call of its own takes the GIL):
    when the ``cloacina`` logger's level changed since (``logging.basicConfig`` in a
    later notebook cell), the cache is dropped, so the next run logs at the new level."""
    level = logging.getLogger("cloacina").getEffectiveLevel()
    if level != _logging_level[0]:
        _logging_level[0] = level
        _native.reset_logging()


def _interrupt(loop: BackgroundLoop, token: str, why: str) -> bool:
    """Stops the attempt ``token`` of a runner whose async loop is ``loop``: a sync
    attempt running now is interrupted in its thread (True while it still runs); anything
    else is an async attempt, or one not started yet: both check when they start."""
    if _invoke.interrupt_sync(token, why):
        return True
    loop.cancel(token, why)
    return False


_open_runners: weakref.WeakSet[Runner] = weakref.WeakSet()

# Registered before `_close_open_runners`, so run after it (atexit goes last in, first
# out): from then on no task thread takes the GIL to end, which the interpreter's
# finalization forbids; the threads of the runners just closed are waited for.
atexit.register(_native.interpreter_exiting)


@atexit.register
def _close_open_runners() -> None:
    for runner in list(_open_runners):
        try:
            runner.close()
        except Exception:
            pass


class Runner:
    """Runs workflows and records every run, task and attempt in a database.

    ``url`` defaults to ``$CLOACINA_DATABASE_URL``, else ``sqlite:///cloacina.db``.
    ``durability="normal"`` survives a process crash; ``"full"`` also survives power
    loss, at a cost per commit. With ``recover=True`` (the default), runs left behind by a
    process that died are continued when their workflow is defined in this process;
    ``lease`` is how long (seconds, at least 1) a run stays owned by a runner that stopped
    heartbeating. ``schema`` (a PostgreSQL tenant) is refused on SQLite. Use as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        durability: str = "normal",
        recover: bool = True,
        lease: float = 30.0,
        schema: str | None = None,
    ) -> None:
        url = backends.default_url() if url is None else url
        self.url = backends.mask(url) if isinstance(url, str) else repr(url)
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool):
            raise TypeError(
                f"max_concurrency must be an int, not {type(max_concurrency).__name__} "
                f"{max_concurrency!r}"
            )
        if max_concurrency < 0:
            raise ValueError(
                f"max_concurrency must be a positive int (or 0 for a runner that only submits "
                f"runs), not {max_concurrency!r}"
            )
        if durability not in ("normal", "full"):
            raise ConfigurationError(f"durability must be 'normal' or 'full', not {durability!r}")
        if not isinstance(recover, bool):
            raise TypeError(f"recover must be a bool, not {type(recover).__name__} {recover!r}")
        lease = seconds("lease", lease, minimum=1.0)
        target = backends.resolve(url)
        if not isinstance(target, (backends.SqliteTarget, backends.PostgresTarget)):
            raise ConfigurationError(
                f"{self.url}: this version of cloacina's Runner drives SQLite and PostgreSQL "
                "databases only"
            )
        if schema is not None and not isinstance(schema, str):
            raise TypeError(f"schema must be a str, not {type(schema).__name__}")
        if schema is not None and isinstance(target, backends.SqliteTarget):
            # A PostgreSQL option (tenants by schema): SQLite ignores nothing silently.
            raise ConfigurationError(
                f"{self.url}: schema={schema!r} is a PostgreSQL option; an SQLite database "
                "has no schemas (use one file per tenant)"
            )
        _native.reset_logging()
        self._lock = threading.Lock()
        # Names this runner to its own task attempts (see _invoke.current_runner).
        self._key = object()
        # Lets a task that reads a key missing from its context name the task that wrote it.
        path = target.path if isinstance(target, backends.SqliteTarget) else None
        postgres = (
            (target.url, self.url, schema) if isinstance(target, backends.PostgresTarget) else None
        )
        self.schema = schema
        self._loop = BackgroundLoop(runner_key=self._key)
        try:
            self._engine: _native.Engine | None = _native.Engine(
                path,
                durability=durability,
                max_concurrency=max_concurrency,
                call_sync=functools.partial(_invoke.call_sync, runner_key=self._key),
                submit_async=self._loop.submit,
                interrupt=functools.partial(_interrupt, self._loop),
                call_hook=_invoke.call_hook,
                recover=recover,
                lease=lease,
                postgres=postgres,
            )
        except ConfigurationError as exc:
            if postgres is not None:
                raise  # the engine's message names the masked URL already
            raise ConfigurationError(f"{self.url}: {exc}") from None
        self.max_concurrency = max_concurrency
        self.durability = durability
        self._path = path
        _invoke.register_database(self._key, _writer_lookup(weakref.ref(self)))
        _warn_if_another_runner_is_open(self)
        _open_runners.add(self)
        # Forgotten (re-running a notebook cell that opens a runner): once nothing
        # references this runner, its engine closes itself (the native object's drop)
        # and its event loop stops; nothing keeps polling in the background.
        finalizer = weakref.finalize(self, self._loop.stop)
        finalizer.atexit = False

    def _waiting_from_own_task(self) -> bool:
        """True when the caller is a task attempt of this runner: while it waits for
        another run, it lends that run its slot."""
        return _invoke.current_runner.get() is self._key

    def _engine_or_raise(self) -> _native.Engine:
        engine = self._engine
        if engine is None:
            raise CloacinaError("this Runner is closed")
        return engine

    def _check_not_on_loop(self, what: str) -> None:
        if threading.get_ident() == self._loop.thread_id:
            raise CloacinaError(
                f"Runner.{what}() would block the runner's own event loop (called from an async "
                f"task); use 'await runner.{what}_async(...)' or runner.start(...) instead"
            )

    @staticmethod
    def _prepare(workflow: Workflow, context: Mapping[str, Any] | None) -> dict[str, Any]:
        if not isinstance(workflow, Workflow):
            raise TypeError(f"expected a Workflow, got {type(workflow).__name__}")
        _follow_logging_level()
        workflow._ensure_registered()
        if context is None:
            return {}
        if not isinstance(context, Mapping):
            raise TypeError(f"a run's input must be a dict, not {type(context).__name__}")
        return dict(context)

    def start(
        self,
        workflow: Workflow,
        context: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> RunHandle:
        """Starts a run and returns at once with its :class:`RunHandle`.

        With ``idempotency_key``, a run already started with the same key (by any runner
        or process on this database) is returned instead of starting a second one.
        """
        data = self._prepare(workflow, context)
        if idempotency_key is not None and not isinstance(idempotency_key, str):
            raise TypeError("idempotency_key must be a str")
        run_id = self._engine_or_raise().submit(workflow.name, data, idempotency_key)
        return RunHandle(self, run_id)

    def resume(self, run_id: str) -> RunHandle:
        """Runs ``run_id`` again from where it stopped, with the current definitions.

        An interrupted run (its process died) continues; a failed or cancelled run runs
        its failed, ``upstream_failed`` and cancelled tasks again and decides its skipped
        tasks' rules again, keeping every completed task's output as it was. The run's
        history keeps both passes. A runner that only submits runs (``max_concurrency=0``)
        queues a failed or cancelled run instead, for a runner serving its workflow
        (:meth:`serve`, ``cloacina worker``) to resume.
        """
        self._engine_or_raise().resume(run_id)
        return RunHandle(self, run_id)

    def purge(self, older_than: timedelta | float) -> int:
        """Deletes the runs that finished (completed, failed or cancelled) more than
        ``older_than`` ago (a ``timedelta``, or seconds), with their tasks, attempts and
        events; returns how many. It deletes in batches of 1,000 runs, each its own short
        transaction, so running work is not held up. Runs not finished are never deleted."""
        if isinstance(older_than, timedelta):
            older_than = older_than.total_seconds()
        age = seconds("older_than", older_than)
        before = int((datetime.now(timezone.utc).timestamp() - age) * 1_000_000)
        return self._engine_or_raise().purge(before)

    def serve(self) -> None:
        """Claims and drives queued runs (those submitted by runners with
        ``max_concurrency=0``, on any host) of the workflows defined in this process, and
        takes over runs whose owner died, until SIGINT or SIGTERM (or Ctrl-C). Then it
        drains: it stops claiming, lets the running attempts finish, and closes the
        runner; the runs left unfinished are continued by other workers. Signal handlers
        are installed only in the main thread; elsewhere, stop with :meth:`close`."""
        engine = self._engine_or_raise()
        if self.max_concurrency == 0:
            raise CloacinaError(
                "a runner with max_concurrency=0 only submits runs: it cannot serve"
            )
        stop = threading.Event()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, lambda *_: stop.set())
        log = logging.getLogger("cloacina")
        log.info("serving %s (max_concurrency=%d)", self.url, self.max_concurrency)
        try:
            # Claims happen in the engine's background checks, woken by the database;
            # this thread only waits for a signal (or for the runner to be closed).
            while not stop.wait(0.25):
                if self._engine is None:
                    return
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        log.info("draining: %d run(s) in progress; waiting for running attempts", engine.driving())
        engine.drain()
        self.close()
        log.info("stopped serving %s", self.url)

    def recover(self) -> list[str]:
        """Takes over runs whose owner is gone and whose workflow is defined here (done
        automatically at start and every few seconds when ``recover=True``); returns
        their ids."""
        return self._engine_or_raise().recover()

    def run(
        self,
        workflow: Workflow,
        context: Mapping[str, Any] | None = None,
        *,
        progress: bool | None = None,
    ) -> RunResult:
        """Runs a workflow to the end and returns its :class:`RunResult`.

        Blocks without holding the GIL; works inside a running event loop (Jupyter).
        A failed run is returned, not raised: call ``result.raise_for_status()``.
        ``progress`` shows the run's progress while it runs: in a notebook, an output
        updated in place (ending as the run's display); on a terminal, one line on
        stderr. None (the default) turns it on in a notebook or when stderr is a
        terminal; True forces the terminal line elsewhere; False turns it off.
        """
        self._check_not_on_loop("run")
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"progress must be a bool or None, not {type(progress).__name__}")
        from cloacina import _progress

        display = _progress.choose(progress)
        handle = self.start(workflow, context)
        try:
            if display is not None:
                result: RunResult = _progress.follow(self, handle.run_id, workflow.name, display)
                return result
            return handle.wait()
        except KeyboardInterrupt:
            # Ctrl-C cancels the run, then goes on as the KeyboardInterrupt it is.
            try:
                self.cancel(handle.run_id)
            finally:
                raise

    def cancel(self, run_id: str) -> bool:
        """Cancels a run: pending tasks become ``cancelled``; running tasks too, and are
        stopped where they run (an async task is cancelled, a sync task gets
        :class:`TaskInterrupted`; one blocked in C code finishes in the background, its
        result discarded), freeing their slots at once; the run ends ``cancelled``. Works
        on runs of other runners and processes on the same database (their owner carries
        it out). False if the run is unknown or final."""
        return self._engine_or_raise().cancel(run_id)

    async def cancel_async(self, run_id: str) -> bool:
        """Awaitable twin of :meth:`cancel`."""
        return await self._engine_or_raise().cancel_async(run_id)

    async def run_async(
        self, workflow: Workflow, context: Mapping[str, Any] | None = None
    ) -> RunResult:
        """Awaitable twin of :meth:`run`."""
        import asyncio  # already loaded by whoever awaits this; not at `import cloacina`

        data = self._prepare(workflow, context)
        # Cancelling the caller while the run is being submitted must still cancel the
        # run: the submission is shielded, and the run it creates is cancelled.
        submitting = asyncio.ensure_future(
            self._engine_or_raise().submit_async(workflow.name, data)
        )
        try:
            run_id = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            created = await asyncio.gather(submitting, return_exceptions=True)
            if isinstance(created[0], str):
                await self.cancel_async(created[0])
            raise
        try:
            return await RunHandle(self, run_id)
        except asyncio.CancelledError:
            await self.cancel_async(run_id)
            raise

    def get_run(self, run_id: str) -> RunResult | None:
        """The run with this id as recorded (by any runner or process), or None."""
        raw = self._engine_or_raise().get_run(run_id)
        return None if raw is None else RunResult._from_native(raw)

    def _ended(self, run_id: str) -> RunResult:
        """Run ``run_id``, which was just waited for: as it ended here when it did
        (``ended_run``), else as stored."""
        return _existing(run_id, self._engine_or_raise().ended_run(run_id))

    def _get_existing(self, run_id: str) -> RunResult:
        return _existing(run_id, self._engine_or_raise().get_run(run_id))

    def list_runs(
        self, workflow: str | Workflow | None = None, status: str | None = None, limit: int = 50
    ) -> list[RunSummary]:
        """Recorded runs, newest first, optionally of one workflow and/or one status, as
        :class:`RunSummary` objects: light to list (no contexts are read); a run's
        context and tasks are read when first asked for."""
        if isinstance(workflow, Workflow):
            workflow = workflow.name
        if not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative int, not {limit!r}")
        raws = self._engine_or_raise().list_runs(workflow, status, limit)
        return [RunSummary._from_native(raw, self) for raw in raws]

    def close(self) -> None:
        """Stops the running task attempts (a sync body is interrupted where it runs;
        one blocked in C code finishes in the background, its result discarded) and
        closes the database. Runs still going stay ``running`` in the database and are
        continued by the next runner on it. Idempotent. Calling it from a task of this
        runner raises :class:`CloacinaError` (it would wait for itself)."""
        if self._waiting_from_own_task() or threading.get_ident() == self._loop.thread_id:
            raise CloacinaError(
                "Runner.close() was called from a task of this runner, which cannot wait "
                "for itself to stop; close the runner after its runs, outside its tasks"
            )
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
            self._loop.stop()
        _invoke.forget_database(self._key)
        _open_runners.discard(self)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._engine is None else "open"
        return f"Runner({self.url!r}, {state})"
