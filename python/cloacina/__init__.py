"""cloacina: durable workflows of plain Python functions.

Mark functions with :func:`task`, group them in a :class:`Workflow`, run it with a
:class:`Runner`; every run, task and attempt is recorded in an embedded SQLite file.
"""

from cloacina._native import __version__ as __version__
from cloacina.context import Context
from cloacina.errors import (
    CloacinaError,
    ConfigurationError,
    DatabaseError,
    TaskError,
    WorkflowError,
    WorkflowFailed,
)
from cloacina.runner import RunHandle, Runner, RunResult, TaskResult
from cloacina.task import Task, task
from cloacina.workflow import Workflow

__all__ = [
    "CloacinaError",
    "ConfigurationError",
    "Context",
    "DatabaseError",
    "RunHandle",
    "RunResult",
    "Runner",
    "Task",
    "TaskError",
    "TaskResult",
    "Workflow",
    "WorkflowError",
    "WorkflowFailed",
    "task",
]
