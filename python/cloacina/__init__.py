"""cloacina: durable workflows of plain Python functions.

Mark functions with :func:`task`, group them in a :class:`Workflow`, run it with a
:class:`Runner`; every run, task and attempt is recorded in an embedded SQLite file.
"""

from cloacina import rules as rules
from cloacina._native import __version__ as __version__
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
from cloacina.runner import Attempt, RunHandle, Runner, RunResult, RunSummary, TaskResult
from cloacina.task import Task, task
from cloacina.workflow import Workflow

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
