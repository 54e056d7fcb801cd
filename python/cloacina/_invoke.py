"""How the engine calls task bodies and hooks, stops running attempts, and classifies
failures. Called from the native engine; not public."""

from __future__ import annotations

import ctypes
import inspect
import threading
import traceback
from collections.abc import Callable
from typing import Any

from cloacina.context import Context
from cloacina.errors import Fail, Retry, Skip, TaskError, TaskTimeout

# Attempts of sync bodies now running: token -> [thread ident, interrupted?].
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


def _set_async_exc(ident: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None
    )


def call_sync(
    fn: Callable[[Context], Any], task_id: str, data: dict[str, Any], token: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs a sync task body; returns ``(writes, touched)`` (see ``Context._collect``)."""
    ident = threading.get_ident()
    record = [ident, False]
    with _running_lock:
        early = _early.pop(token, None)
        if early is None:
            _running[token] = record
    if early == "timeout":
        raise TaskTimeout(f"task '{task_id}' timed out before it started")
    if early is not None:
        raise TaskError(f"task '{task_id}' was cancelled before it started")
    try:
        ctx = Context._wrap(data)
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
    finally:
        with _running_lock:
            _running.pop(token, None)
            if record[1]:
                # A TaskTimeout aimed at this attempt must not reach later code.
                _set_async_exc(ident, None)


async def call_async(
    fn: Callable[[Context], Any], task_id: str, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs an async task body on the runner's loop; returns ``(writes, touched)``."""
    ctx = Context._wrap(data)
    result = await fn(ctx)
    return ctx._collect(result, task_id)


def interrupt_sync(token: str, why: str) -> bool:
    """Raises TaskTimeout inside the thread running the sync attempt ``token`` (timeouts
    only: a cancelled sync attempt is left to finish). True if it was running."""
    with _running_lock:
        record = _running.get(token)
        if record is None:
            return False
        if why == "timeout":
            record[1] = True
            _set_async_exc(record[0], TaskTimeout)
    return True


def call_hook(hook: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Calls a hook with ``args``, wrapping a dict context in a Context; awaits it if it
    is a coroutine function."""
    args = tuple(Context(a) if isinstance(a, dict) else a for a in args)
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
    None)``: the task skipped itself."""
    if isinstance(exc, Skip):
        return str(exc) or "the task skipped itself", "", "skip", None
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _INTERNAL_FILES:
        tb = tb.tb_next
    name = type(exc).__qualname__
    message = str(exc)
    error = f"{name}: {message}" if message else name
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if isinstance(exc, Fail):
        return error, text, "never", None
    if isinstance(exc, Retry):
        return error, text, "retry", exc.delay
    matches = isinstance(exc, retry_on) if retry_on else isinstance(exc, Exception)
    return error, text, "policy" if matches else "never", None
