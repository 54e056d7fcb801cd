"""Trigger rules: when a task runs, given how its upstream tasks ended.

A rule is plain data (a JSON dict) evaluated by the engine once every direct
dependency of the task is final. A task whose rule is false is ``skipped``, with the
reason recorded; its own downstream tasks then follow their own rules. The default is
:func:`all_success`.

    from cloacina import rules, task

    @task(dependencies=["load"], trigger=rules.all_done())
    def cleanup(ctx): ...
"""

from __future__ import annotations

from typing import Any

from cloacina import _native

Rule = dict[str, Any]
"""A trigger rule: a JSON-able dict made by the functions of this module."""

OPS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in", "exists")
"""The comparisons :func:`context_value` accepts."""


def _checked(rule: Rule) -> Rule:
    _native.validate_rule(rule)
    return rule


def all_success() -> Rule:
    """Every direct dependency completed (the default)."""
    return {"rule": "all_success"}


def all_done() -> Rule:
    """Every direct dependency is final, however it ended (cleanup tasks)."""
    return {"rule": "all_done"}


def one_success() -> Rule:
    """At least one direct dependency completed."""
    return {"rule": "one_success"}


def one_failed() -> Rule:
    """At least one direct dependency failed (error handlers)."""
    return {"rule": "one_failed"}


def all_failed() -> Rule:
    """Every direct dependency failed."""
    return {"rule": "all_failed"}


def none_failed() -> Rule:
    """No direct dependency failed (completed or skipped)."""
    return {"rule": "none_failed"}


def task_succeeded(task_id: str) -> Rule:
    """The upstream task ``task_id`` completed."""
    return _checked({"rule": "task_succeeded", "task": task_id})


def task_failed(task_id: str) -> Rule:
    """The upstream task ``task_id`` failed."""
    return _checked({"rule": "task_failed", "task": task_id})


def task_skipped(task_id: str) -> Rule:
    """The upstream task ``task_id`` was skipped."""
    return _checked({"rule": "task_skipped", "task": task_id})


def context_value(key: str, op: str, value: Any = None) -> Rule:
    """Compares ``key`` of the task's input context with ``value``; ``op`` is one of
    ``== != > >= < <= in not_in exists``. A missing key makes every comparison false."""
    if op not in OPS:
        from cloacina.errors import WorkflowError

        raise WorkflowError(f"invalid trigger rule: unknown op {op!r} (use {' '.join(OPS)})")
    return _checked({"rule": "context_value", "key": key, "op": op, "value": value})


def all_of(*rules: Rule) -> Rule:
    """Every rule holds."""
    return _checked({"rule": "all_of", "rules": list(rules)})


def any_of(*rules: Rule) -> Rule:
    """At least one rule holds."""
    return _checked({"rule": "any_of", "rules": list(rules)})


def not_(rule: Rule) -> Rule:
    """The rule does not hold."""
    return _checked({"rule": "not", "of": rule})


__all__ = [
    "OPS",
    "Rule",
    "all_done",
    "all_failed",
    "all_of",
    "all_success",
    "any_of",
    "context_value",
    "none_failed",
    "not_",
    "one_failed",
    "one_success",
    "task_failed",
    "task_skipped",
    "task_succeeded",
]
