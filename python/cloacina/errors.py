"""The exceptions cloacina raises; every one derives from :class:`CloacinaError`.

:class:`Retry` and :class:`Fail` are raised *by tasks* to steer their own retries.
"""

from __future__ import annotations

from cloacina._durations import seconds

# Defined here, not in the native module (which raises them by importing them): so that
# `import cloacina`, the command line and the pytest plugin load no engine.


class CloacinaError(Exception):
    """Base class of every cloacina error."""


class WorkflowError(CloacinaError):
    """A workflow definition is invalid."""


class WorkflowFailed(CloacinaError):
    """A run ended failed (raised by RunResult.raise_for_status)."""


class TaskError(CloacinaError):
    """A task is invalid or produced something unusable."""


class DatabaseError(CloacinaError):
    """The database failed or holds unreadable data."""


class ConfigurationError(CloacinaError):
    """A bad or unsupported setting, such as a database URL."""


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
