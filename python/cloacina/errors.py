"""The exceptions cloacina raises; every one derives from :class:`CloacinaError`.

:class:`Retry` and :class:`Fail` are raised *by tasks* to steer their own retries.
"""

from __future__ import annotations

from cloacina._durations import seconds
from cloacina._native import (
    CloacinaError,
    ConfigurationError,
    DatabaseError,
    TaskError,
    WorkflowError,
    WorkflowFailed,
)


class TaskTimeout(TaskError, TimeoutError):
    """An attempt ran longer than its task's ``timeout``."""


class TaskInterrupted(BaseException):
    """Raised inside a running sync task to stop it: its timeout expired, its run was
    cancelled (or timed out), or its runner is closing. A ``BaseException`` (like
    ``KeyboardInterrupt``), so ``except Exception:`` in a task cannot swallow it: clean up
    in ``finally``. It is raised again while the task keeps running. The attempt is
    recorded as ``TaskTimeout`` or ``cancelled``."""


class Retry(CloacinaError):
    """Raise in a task to ask for another attempt (after ``delay`` seconds, or the
    task's backoff if None), whatever its ``retry_on``; within its ``retries`` budget."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        checked = None if delay is None else seconds("Retry delay", delay)
        super().__init__(message)
        self.delay = checked


class Fail(CloacinaError):
    """Raise in a task to fail it at once, without any retry."""


class Skip(CloacinaError):
    """Raise in a task to skip it: the task ends ``skipped`` with this message as its
    reason, its writes are discarded, it is not retried, and downstream trigger rules
    see a skipped task (Airflow's ``AirflowSkipException``)."""

    def __init__(self, reason: str = "the task skipped itself") -> None:
        super().__init__(reason)


__all__ = [
    "CloacinaError",
    "ConfigurationError",
    "DatabaseError",
    "Fail",
    "Retry",
    "Skip",
    "TaskError",
    "TaskInterrupted",
    "TaskTimeout",
    "WorkflowError",
    "WorkflowFailed",
]
