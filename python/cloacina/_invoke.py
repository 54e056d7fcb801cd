"""How the engine calls task bodies and hooks, stops running attempts, and classifies
failures. Called from the native engine; not public."""

from __future__ import annotations

import contextvars
import ctypes
import functools
import inspect
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cloacina._durations import seconds
from cloacina.context import Context
from cloacina.errors import Fail, Retry, Skip, TaskError, TaskInterrupted, TaskTimeout

if TYPE_CHECKING:
    from cloacina._native import ContextView

# Attempts of sync bodies now running: token -> [thread ident, why interrupted or None].
_running: dict[str, list[Any]] = {}
_running_lock = threading.Lock()
# Interrupts ("timeout" or "cancel") that arrived before their attempt started: the
# attempt checks here when it starts (sync in call_sync, async in the loop).
_early: dict[str, str] = {}


def take_early_interrupt(token: str) -> str | None:
    """The interrupt that arrived for ``token`` before it started, if any (once)."""
    with _running_lock:
        return _early.pop(token, None)


def note_early_interrupt(token: str, why: str) -> None:
    """Remembers an interrupt for an attempt that has not started yet."""
    with _running_lock:
        if len(_early) > 10_000:  # attempts that finished just before their interrupt
            _early.clear()
        _early[token] = why


current_runner: contextvars.ContextVar[object | None] = contextvars.ContextVar(
    "cloacina_current_runner", default=None
)
"""The key of the runner whose task attempt runs in this thread or asyncio task: a task
that waits for another run of its own runner lends it its slot, and cannot close it."""


_writer_lookups: dict[object, Callable[[str, str, str], str | None]] = {}
"""For each runner (by its key): ``lookup(run_id, task_id, key)``, naming the task of a run
that wrote a key another task found missing from its context."""


def register_database(
    runner_key: object, lookup: Callable[[str, str, str], str | None] | None
) -> None:
    """Records how to find, in the runner ``runner_key``'s database, which task of a run
    wrote a key (None: forget it). A task of that runner that reads a key missing from its
    context is then told which task of its run wrote the key."""
    if lookup is None:
        _writer_lookups.pop(runner_key, None)
    else:
        _writer_lookups[runner_key] = lookup


def forget_database(runner_key: object) -> None:
    """Forgets what :func:`register_database` recorded for ``runner_key`` (on close)."""
    _writer_lookups.pop(runner_key, None)


def _explainer(runner_key: object, token: str, task_id: str) -> Callable[[str], str | None] | None:
    """For the attempt ``token`` (``run_id/task_id/attempt``) of a runner: a function
    naming another task of the run that wrote a key, or None when the runner's database
    cannot be read from here."""
    lookup = _writer_lookups.get(runner_key)
    if lookup is None or not token:
        return None
    return functools.partial(_find_writer, lookup, token.partition("/")[0], task_id)


def _find_writer(
    lookup: Callable[[str, str, str], str | None], run_id: str, task_id: str, key: str
) -> str | None:
    """The first task (in merge order) of run ``run_id``, other than ``task_id``, that
    completed having written ``key``; None when there is none or the database cannot be
    read. Only called when a task reads a missing key: it costs one read of the run."""
    try:
        return lookup(run_id, task_id, key)
    except Exception:
        return None


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


def call_sync(
    fn: Callable[[Context], Any],
    task_id: str,
    data: ContextView,
    token: str,
    runner_key: object = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs a sync task body; returns ``(writes, touched)`` (see ``Context._collect``)."""
    ident = threading.get_ident()
    record: list[Any] = [ident, None]
    with _running_lock:
        early = _early.pop(token, None)
        if early is None:
            _running[token] = record
    if early == "timeout":
        raise TaskTimeout(f"task '{task_id}' timed out before it started")
    if early is not None:
        raise TaskError(f"task '{task_id}' was cancelled before it started")
    runner = current_runner.set(runner_key)
    try:
        ctx = Context._wrap(data, task_id, _explainer(runner_key, token, task_id))
        result = fn(ctx)
        if inspect.isawaitable(result):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise TaskError(
                f"task '{task_id}' returned an awaitable: define it with 'async def' so the "
                "runner awaits it"
            )
        return ctx._collect(result, task_id)
    except TaskInterrupted:
        if record[1] == "timeout":
            raise TaskTimeout(f"task '{task_id}' timed out") from None
        raise TaskError(f"task '{task_id}' was stopped: its run was cancelled") from None
    finally:
        current_runner.reset(runner)
        with _running_lock:
            _running.pop(token, None)
            if record[1] is not None:
                # An interruption aimed at this attempt must not reach later code.
                _set_async_exc(ident, None)


async def call_async(
    fn: Callable[[Context], Any],
    task_id: str,
    data: ContextView,
    token: str = "",
    runner_key: object = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs an async task body on the runner's loop; returns ``(writes, touched)``.
    ``token`` and ``runner_key`` name the attempt and its runner, as for
    :func:`call_sync`."""
    ctx = Context._wrap(data, task_id, _explainer(runner_key, token, task_id))
    result = await fn(ctx)
    return ctx._collect(result, task_id)


def interrupt_sync(token: str, why: str) -> bool:
    """Stops the sync attempt ``token`` (``why`` is ``"timeout"`` or ``"cancel"``) by
    raising ``TaskInterrupted`` in its thread. True while it is still running: the engine
    interrupts it again until it stops (a body blocked in C code finishes first)."""
    with _running_lock:
        record = _running.get(token)
        if record is None:
            return False
        if record[1] is None:
            record[1] = why
        _set_async_exc(record[0], TaskInterrupted)
    return True


def call_hook(hook: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Calls a hook with ``args``, wrapping the engine's view of the context in a
    Context; awaits it if it is a coroutine function."""
    from cloacina._native import ContextView

    args = tuple(Context._wrap(a) if isinstance(a, ContextView) else a for a in args)
    result = hook(*args)
    if inspect.isawaitable(result):
        import asyncio  # only async hooks need it: `import cloacina` stays light

        asyncio.run(_await(result))


async def _await(awaitable: Any) -> Any:
    return await awaitable


_INTERNAL_FILES = frozenset({__file__, __file__.replace("_invoke.py", "_loop.py")})


def describe_failure(
    exc: BaseException, retry_on: tuple[type[BaseException], ...] | None
) -> tuple[str, str, str, float | None]:
    """``(error, traceback, hint, delay)`` for a task's exception: ``"Type: message"``,
    the traceback without the engine's frames, and whether to retry: ``"never"`` for
    ``Fail`` or an exception ``retry_on`` does not match, ``"retry"`` (with ``Retry``'s
    delay) for ``Retry``, ``"policy"`` otherwise. ``Skip`` is ``(reason, "", "skip",
    None)``: the task skipped itself. Both texts are valid UTF-8 whatever the exception
    holds (a lone surrogate becomes a ``\\udce9`` escape)."""
    if isinstance(exc, Skip):
        return _utf8(_str(exc) or "the task skipped itself"), "", "skip", None
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _INTERNAL_FILES:
        tb = tb.tb_next
    name = type(exc).__qualname__
    message = _str(exc)
    error = _utf8(f"{name}: {message}" if message else name)
    text = _utf8("".join(traceback.format_exception(type(exc), exc, tb)))
    if isinstance(exc, Fail):
        return error, text, "never", None
    if isinstance(exc, Retry):
        delay = getattr(exc, "delay", None)
        try:
            return error, text, "retry", None if delay is None else seconds("Retry delay", delay)
        except (TypeError, ValueError) as bad:
            # Changed after Retry checked it: handled as Retry(delay=nan) raising would be.
            return f"{error} ({bad})", text, "policy", None
    matches = isinstance(exc, retry_on) if retry_on else isinstance(exc, Exception)
    return error, text, "policy" if matches else "never", None


def _str(exc: BaseException) -> str:
    """``str(exc)``, or what ``traceback`` shows when that raises."""
    try:
        return str(exc)
    except Exception:
        return "<exception str() failed>"


def _utf8(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate (which no UTF-8 string can hold) becomes
    a backslash escape, e.g. ``\\udce9``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
