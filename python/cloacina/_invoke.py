"""How the engine calls a task body: build its Context, call, collect its writes."""

from __future__ import annotations

import inspect
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
