"""Trigger rules: when a task runs, given how its upstream tasks ended.

A rule is plain data (a JSON dict) evaluated by the engine once every direct
dependency of the task is final. The rules over dependencies mean what Apache Airflow's
trigger rules of the same names mean, and decide one of three things:

- run the task;
- ``skipped``: the rule chose not to run it (for example ``one_failed`` when nothing
  failed, or the default rule after a skipped dependency);
- ``upstream_failed``: it cannot run because a dependency failed or is itself
  ``upstream_failed``, under a rule that needs success (``all_success``,
  ``one_success``, ``none_failed``, ``none_failed_min_one_success``,
  ``all_done_min_one_success``).

Rules count ``upstream_failed`` as a failure, as Airflow does. The reason is recorded in
``TaskResult.reason``; a task's own downstream tasks then follow their own rules. The
default is :func:`all_success`.

Differences from Airflow: every rule waits until all direct dependencies are final
(``one_success`` and ``one_failed`` do not fire early). A task without dependencies
satisfies every dependency rule and runs (as in Airflow), though a
:func:`context_value` rule still decides it.

    from cloacina import rules, task

    @task(dependencies=["load"], trigger=rules.all_done())
    def cleanup(ctx): ...
"""

from __future__ import annotations

from typing import Any

Rule = dict[str, Any]
"""A trigger rule: a JSON-able dict made by the functions of this module."""

OPS = ("==", "!=", ">", ">=", "<", "<=", "in", "not_in", "exists")
"""The comparisons :func:`context_value` accepts."""


def _checked(rule: Rule) -> Rule:
    from cloacina import _native

    _native.validate_rule(rule)
    return rule


def all_success() -> Rule:
    """Every direct dependency completed (the default). A failed or ``upstream_failed``
    dependency makes the task ``upstream_failed``; otherwise a skipped one skips it."""
    return {"rule": "all_success"}


def all_done() -> Rule:
    """Every direct dependency is final, however it ended (cleanup tasks)."""
    return {"rule": "all_done"}


def always() -> Rule:
    """Runs whatever its dependencies did (as :func:`all_done`, once they are final)."""
    return {"rule": "always"}


def one_success() -> Rule:
    """At least one direct dependency completed; ``upstream_failed`` if none did and
    one failed, skipped if all were skipped."""
    return {"rule": "one_success"}


def one_failed() -> Rule:
    """At least one direct dependency failed or is ``upstream_failed`` (alerts, error
    handlers); skipped otherwise."""
    return {"rule": "one_failed"}


def one_done() -> Rule:
    """At least one direct dependency completed or failed; skipped otherwise."""
    return {"rule": "one_done"}


def all_failed() -> Rule:
    """Every direct dependency failed or is ``upstream_failed``; skipped otherwise."""
    return {"rule": "all_failed"}


def none_failed() -> Rule:
    """No direct dependency failed or is ``upstream_failed`` (each completed or was
    skipped); ``upstream_failed`` otherwise."""
    return {"rule": "none_failed"}


def none_failed_min_one_success() -> Rule:
    """No direct dependency failed or is ``upstream_failed``, and at least one completed:
    the join after a branch. ``upstream_failed`` after a failure, skipped when every
    dependency was skipped."""
    return {"rule": "none_failed_min_one_success"}


def none_skipped() -> Rule:
    """No direct dependency was skipped (each completed, failed or is
    ``upstream_failed``); skipped otherwise."""
    return {"rule": "none_skipped"}


def all_skipped() -> Rule:
    """Every direct dependency was skipped; skipped otherwise."""
    return {"rule": "all_skipped"}


def all_done_min_one_success() -> Rule:
    """Every direct dependency is final, none was skipped, and at least one completed.
    Skipped after a skipped dependency; ``upstream_failed`` when none completed."""
    return {"rule": "all_done_min_one_success"}


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
    """Every rule holds. When one does not, the task is ``upstream_failed`` if a part
    says so, else skipped."""
    return _checked({"rule": "all_of", "rules": list(rules)})


def any_of(*rules: Rule) -> Rule:
    """At least one rule holds. When none does, the task is ``upstream_failed`` if a
    part says so, else skipped."""
    return _checked({"rule": "any_of", "rules": list(rules)})


def not_(rule: Rule) -> Rule:
    """The rule does not hold (the task runs exactly when ``rule`` would not run it;
    otherwise it is skipped)."""
    return _checked({"rule": "not", "of": rule})


__all__ = [
    "OPS",
    "Rule",
    "all_done",
    "all_done_min_one_success",
    "all_failed",
    "all_of",
    "all_skipped",
    "all_success",
    "always",
    "any_of",
    "context_value",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "not_",
    "one_done",
    "one_failed",
    "one_success",
    "task_failed",
    "task_skipped",
    "task_succeeded",
]
