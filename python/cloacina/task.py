"""``@task``: turns a plain function into a :class:`Task` registered with the engine."""

from __future__ import annotations

import functools
import hashlib
import inspect
import types
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from cloacina._durations import seconds
from cloacina.context import Context

F = TypeVar("F", bound=Callable[..., Any])


BACKOFFS = ("fixed", "linear", "exponential")
"""How the wait between attempts grows."""


class Task:
    """A unit of work: a function of one :class:`Context`, with an id, dependencies and
    execution options. Still callable as the plain function, so it can be unit-tested
    directly."""

    def __init__(
        self,
        fn: Callable[[Context], Any],
        *,
        id: str | None = None,
        dependencies: Iterable[Task | str] | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        backoff: str = "fixed",
        max_retry_delay: float | None = None,
        jitter: bool = False,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
        timeout: float | None = None,
        trigger: dict[str, Any] | None = None,
        on_success: Callable[..., Any] | None = None,
        on_failure: Callable[..., Any] | None = None,
        on_retry: Callable[..., Any] | None = None,
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
        retry_on_types = _exception_types(task_id, retry_on)
        options: dict[str, Any] = {
            "retries": _non_negative_int(task_id, "retries", retries),
            "retry_delay": seconds(f"task '{task_id}': retry_delay", retry_delay),
            "backoff": backoff,
            "max_retry_delay": None
            if max_retry_delay is None
            else seconds(f"task '{task_id}': max_retry_delay", max_retry_delay),
            "jitter": jitter,
            "retry_on": retry_on_types,
            "timeout": None
            if timeout is None
            else seconds(f"task '{task_id}': timeout", timeout, allow_zero=False),
            "trigger": trigger,
            "on_success": on_success,
            "on_failure": on_failure,
            "on_retry": on_retry,
        }
        if backoff not in BACKOFFS:
            raise ValueError(
                f"task '{task_id}': backoff must be one of {BACKOFFS}, not {backoff!r}"
            )
        if not isinstance(jitter, bool):
            raise TypeError(f"task '{task_id}': jitter must be a bool")
        for hook in ("on_success", "on_failure", "on_retry"):
            if options[hook] is not None and not callable(options[hook]):
                raise TypeError(f"task '{task_id}': {hook} must be callable")
        from cloacina import _native  # the engine loads with the first task defined

        if trigger is not None:
            if not isinstance(trigger, dict):
                raise TypeError(
                    f"task '{task_id}': trigger must be a rule from cloacina.rules, not {trigger!r}"
                )
            _native.validate_rule(trigger)
        from cloacina.errors import TaskTimeout

        policy = {
            key: options[key]
            for key in ("retries", "retry_delay", "backoff", "max_retry_delay", "jitter", "timeout")
        }
        policy["trigger"] = trigger
        policy["retry_on_timeout"] = issubclass(TaskTimeout, retry_on_types)
        self.fn = fn
        self.id: str = task_id
        self.dependencies = deps
        self._dependency_tasks = dep_tasks
        self._options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.fingerprint = definition_fingerprint(fn, deps, policy, options)
        functools.update_wrapper(self, fn)
        _native.register_task(
            task_id,
            fn,
            is_async=self.is_async,
            dependencies=deps,
            fingerprint=self.fingerprint,
            pull_in=[d.id for d in dep_tasks],
            policy=policy,
            retry_on=retry_on_types,
            hooks=(on_success, on_failure, on_retry),
        )
        _defined[task_id] = self

    @property
    def options(self) -> dict[str, Any]:
        """The task's execution options: retries, backoff, timeout, trigger, hooks."""
        return dict(self._options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calls the task's function directly (no runner, no retries, no timeout)."""
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> str:
        """Pickles the task by reference, as functions pickle: by its module and qualified
        name, so it unpickles to the task defined there in the unpickling process (as in
        ``concurrent.futures.ProcessPoolExecutor``)."""
        qualname = getattr(self, "__qualname__", None)
        if not isinstance(qualname, str) or "<locals>" in qualname.split("."):
            import pickle  # only pickling needs it: `import cloacina` stays light

            raise pickle.PicklingError(
                f"cannot pickle task '{self.id}': a task pickles by reference, so it must be "
                f"defined at the top level of a module (its qualified name is {qualname!r})"
            )
        return qualname

    def __repr__(self) -> str:
        deps = f", dependencies={self.dependencies!r}" if self.dependencies else ""
        return f"Task({self.id!r}{deps})"


@overload
def task(fn: Callable[..., Any], /) -> Task: ...
@overload
def task(
    *,
    id: str | None = None,
    dependencies: Iterable[Task | str] | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    backoff: str = "fixed",
    max_retry_delay: float | None = None,
    jitter: bool = False,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    timeout: float | None = None,
    trigger: dict[str, Any] | None = None,
    on_success: Callable[..., Any] | None = None,
    on_failure: Callable[..., Any] | None = None,
    on_retry: Callable[..., Any] | None = None,
) -> Callable[[Callable[..., Any]], Task]: ...
def task(fn: Callable[..., Any] | None = None, /, **options: Any) -> Task | Callable[..., Task]:
    """Marks a function (sync or ``async def``) as a task.

    Use bare (``@task``: the id is the function's name) or with options:

    - ``id``, ``dependencies`` (Task objects or id strings);
    - ``retries`` (retries after the first attempt), ``retry_delay`` (seconds),
      ``backoff`` (``"fixed" | "linear" | "exponential"``), ``max_retry_delay``,
      ``jitter`` (spread each delay randomly within it), ``retry_on`` (exception types
      that are retried; default any ``Exception``);
    - ``timeout`` (seconds per attempt: the attempt fails with ``TaskTimeout``);
    - ``trigger`` (a rule from :mod:`cloacina.rules`; default ``all_success()``);
    - ``on_success(task_id, ctx)``, ``on_failure(task_id, error, ctx)``,
      ``on_retry(task_id, error, attempt)`` hooks.

    Defining a task again under the same id replaces the previous definition. An unknown
    option is a ``TypeError``.
    """
    if fn is not None:
        return Task(fn, **options)
    _check_option_names(options)

    def decorate(f: Callable[..., Any]) -> Task:
        return Task(f, **options)

    return decorate


_OPTION_NAMES = frozenset(inspect.signature(Task.__init__).parameters) - {"self", "fn"}


def _check_option_names(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise TypeError(
            f"unknown task option(s): {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_OPTION_NAMES))}"
        )


def _non_negative_int(task_id: str, name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"task '{task_id}': {name} must be a non-negative int, not {value!r}")
    return value


def _exception_types(task_id: str, value: Any) -> tuple[type[BaseException], ...]:
    types_ = value if isinstance(value, tuple) else (value,)
    for t in types_:
        if not (isinstance(t, type) and issubclass(t, BaseException)):
            raise TypeError(
                f"task '{task_id}': retry_on must be an exception type or a tuple of them, "
                f"not {value!r}"
            )
    return types_


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


_defined: dict[str, Task] = {}
"""The current definition of each task id in this process (the engine runs these)."""


def defined_task(task_id: str) -> Task:
    """The task defined now under ``task_id``."""
    return _defined[task_id]


def definition_fingerprint(
    fn: Callable[..., Any], deps: list[str], policy: dict[str, Any], options: dict[str, Any]
) -> str:
    """A digest of everything that defines a task: its code, its dependencies and its
    options (hooks and ``retry_on`` by name). A workflow's version changes with it."""
    digest = hashlib.sha256(code_fingerprint(fn).encode())
    digest.update(repr(deps).encode())
    digest.update(repr(sorted(policy.items(), key=lambda kv: kv[0])).encode())
    for name in ("retry_on", "on_success", "on_failure", "on_retry"):
        value = options[name]
        values = value if isinstance(value, tuple) else (value,)
        digest.update(repr([getattr(v, "__qualname__", repr(v)) for v in values]).encode())
    return digest.hexdigest()[:16]


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
