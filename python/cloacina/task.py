"""``@task``: turns a plain function into a :class:`Task` registered with the engine."""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from cloacina import _native
from cloacina.context import Context

F = TypeVar("F", bound=Callable[..., Any])


class Task:
    """A unit of work: a function of one :class:`Context`, with an id and dependencies.

    Still callable as the plain function, so it can be unit-tested directly.
    """

    __slots__ = (
        "__dict__",
        "_dependency_tasks",
        "dependencies",
        "fingerprint",
        "fn",
        "id",
        "is_async",
    )

    def __init__(
        self,
        fn: Callable[[Context], Any],
        *,
        id: str | None = None,
        dependencies: Iterable[Task | str] | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@task needs a function, not {type(fn).__name__}")
        task_id = id if id is not None else getattr(fn, "__name__", None)
        if not isinstance(task_id, str) or not task_id:
            raise TypeError("a task id must be a non-empty str")
        _check_signature(fn, task_id)
        deps: list[str] = []
        dep_tasks: list[Task] = []
        if isinstance(dependencies, (str, Task)):
            dependencies = [dependencies]
        for dep in dependencies or ():
            if isinstance(dep, Task):
                dep_tasks.append(dep)
                dep_id = dep.id
            elif isinstance(dep, str) and dep:
                dep_id = dep
            else:
                raise TypeError(
                    f"task '{task_id}': a dependency must be a Task or a task id str, not {dep!r}"
                )
            if dep_id not in deps:
                deps.append(dep_id)
        self.fn = fn
        self.id = task_id
        self.dependencies = deps
        self._dependency_tasks = dep_tasks
        self.is_async = inspect.iscoroutinefunction(fn)
        self.fingerprint = code_fingerprint(fn)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        _native.register_task(
            task_id,
            fn,
            is_async=self.is_async,
            dependencies=deps,
            fingerprint=self.fingerprint,
        )

    @property
    def options(self) -> dict[str, Any]:
        """The task's execution options (none beyond id and dependencies yet)."""
        return {}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        deps = f", dependencies={self.dependencies!r}" if self.dependencies else ""
        return f"Task({self.id!r}{deps})"


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    *, id: str | None = None, dependencies: Iterable[Task | str] | None = None
) -> Callable[[Callable[..., Any]], Task]: ...
def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    id: str | None = None,
    dependencies: Iterable[Task | str] | None = None,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Marks a function (sync or ``async def``) as a task.

    Use bare (``@task``: the id is the function's name) or with options
    (``@task(id="x", dependencies=[other_task, "other_id"])``). Defining a task again
    under the same id replaces the previous definition.
    """
    if fn is not None:
        return Task(fn, id=id, dependencies=dependencies)

    def decorate(f: Callable[..., Any]) -> Task:
        return Task(f, id=id, dependencies=dependencies)

    return decorate


def _check_signature(fn: Callable[..., Any], task_id: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(None)
    except TypeError:
        raise TypeError(
            f"task '{task_id}' must accept exactly one positional argument, the Context"
        ) from None


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """A digest of a function's code (bytecode, constants, names), not its line numbers."""
    digest = hashlib.sha256()
    code = getattr(fn, "__code__", None)
    if code is None:
        digest.update(repr(getattr(fn, "__qualname__", type(fn).__qualname__)).encode())
    else:
        _feed_code(digest, code)
    return digest.hexdigest()[:16]


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    digest.update(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        elif isinstance(const, frozenset):
            digest.update(repr(sorted(map(repr, const))).encode())
        else:
            digest.update(repr(const).encode())
