"""cloacina: durable workflows of plain Python functions.

Mark functions with :func:`task`, group them in a :class:`Workflow`, run it with a
:class:`Runner`; every run, task and attempt is recorded in an embedded SQLite file.

The runner's names (and ``__version__``) are imported when first used, and the native
engine loads with the first task defined: ``import cloacina`` itself is light, and so are
the command line's ``--help`` and the pytest plugin.
"""

import typing as _typing

from cloacina import rules as rules
from cloacina.context import Context
from cloacina.errors import (
    CloacinaError,
    ConfigurationError,
    DatabaseError,
    Fail,
    Retry,
    Skip,
    TaskError,
    TaskInterrupted,
    TaskTimeout,
    WorkflowError,
    WorkflowFailed,
)
from cloacina.task import Task, task
from cloacina.workflow import Workflow

if _typing.TYPE_CHECKING:
    from cloacina.runner import Attempt, RunHandle, Runner, RunResult, RunSummary, TaskResult

    __version__: str

_FROM_RUNNER = frozenset(
    {"Attempt", "RunHandle", "RunResult", "RunSummary", "Runner", "TaskResult"}
)


def __getattr__(name: str) -> object:
    """The runner's names and ``__version__``, imported when first used."""
    if name == "__version__":
        from cloacina._native import __version__ as version

        value: object = version
    elif name in _FROM_RUNNER:
        from cloacina import runner

        value = getattr(runner, name)
    else:
        raise AttributeError(f"module 'cloacina' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "Attempt",
    "CloacinaError",
    "ConfigurationError",
    "Context",
    "DatabaseError",
    "Fail",
    "Retry",
    "RunHandle",
    "RunResult",
    "RunSummary",
    "Runner",
    "Skip",
    "Task",
    "TaskError",
    "TaskInterrupted",
    "TaskResult",
    "TaskTimeout",
    "Workflow",
    "WorkflowError",
    "WorkflowFailed",
    "task",
]
