"""The exceptions cloacina raises; every one derives from :class:`CloacinaError`.

:class:`Retry` and :class:`Fail` are raised *by tasks* to steer their own retries.
"""

from __future__ import annotations

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


class Retry(CloacinaError):
    """Raise in a task to ask for another attempt (after ``delay`` seconds, or the
    task's backoff if None), whatever its ``retry_on``; within its ``retries`` budget."""

    def __init__(self, message: str = "retry requested", *, delay: float | None = None) -> None:
        if delay is not None and (not isinstance(delay, (int, float)) or delay < 0):
            raise ValueError(f"Retry delay must be a non-negative number of seconds, not {delay!r}")
        super().__init__(message)
        self.delay = None if delay is None else float(delay)


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
    "TaskTimeout",
    "WorkflowError",
    "WorkflowFailed",
]
