"""How the engine calls a task body: build its Context, call, collect its writes."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from typing import Any

from cloacina.context import Context
from cloacina.errors import TaskError


def call_sync(
    fn: Callable[[Context], Any], task_id: str, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs a sync task body; returns ``(writes, touched)`` (see ``Context._collect``)."""
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


async def call_async(
    fn: Callable[[Context], Any], task_id: str, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Runs an async task body on the runner's loop; returns ``(writes, touched)``."""
    ctx = Context._wrap(data)
    result = await fn(ctx)
    return ctx._collect(result, task_id)


_INTERNAL_FILES = frozenset({__file__, __file__.replace("_invoke.py", "_loop.py")})


def describe_failure(exc: BaseException) -> tuple[str, str]:
    """``("Type: message", traceback text)`` for a task's exception, without the
    engine's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in _INTERNAL_FILES:
        tb = tb.tb_next
    name = type(exc).__qualname__
    message = str(exc)
    error = f"{name}: {message}" if message else name
    return error, "".join(traceback.format_exception(type(exc), exc, tb))
