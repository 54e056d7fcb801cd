"""The exceptions cloacina raises; every one derives from :class:`CloacinaError`."""

from cloacina._native import (
    CloacinaError,
    ConfigurationError,
    DatabaseError,
    TaskError,
    WorkflowError,
    WorkflowFailed,
)

__all__ = [
    "CloacinaError",
    "ConfigurationError",
    "DatabaseError",
    "TaskError",
    "WorkflowError",
    "WorkflowFailed",
]
