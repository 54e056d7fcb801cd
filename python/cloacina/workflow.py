"""``Workflow``: a named DAG of tasks, validated when it is defined."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloacina import _native
from cloacina._durations import seconds
from cloacina.errors import WorkflowError
from cloacina.task import Task

_defined: dict[str, Workflow] = {}
"""The latest workflow defined under each name in this process (for unpickling)."""


def _defined_workflow(name: str) -> Workflow:
    """The workflow defined under ``name`` in this process: how a pickled workflow is
    restored; ``WorkflowError`` if no workflow of that name is defined here."""
    try:
        return _defined[name]
    except KeyError:
        raise WorkflowError(
            f"cannot unpickle workflow {name!r}: no workflow of that name is defined in this "
            "process; import the module that defines it before unpickling"
        ) from None


class Workflow:
    """A named set of tasks whose dependencies form a DAG.

    Validated at definition: an empty workflow, duplicate ids, unknown dependency ids
    and cycles raise :class:`cloacina.WorkflowError`. A dependency given as a ``Task``
    object that is not listed is pulled in. Defining a workflow again under the same
    name replaces the previous definition.
    """

    __slots__ = ("_order", "description", "name", "tasks", "timeout", "version")

    def __init__(
        self,
        name: str,
        tasks: Iterable[Task],
        description: str | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a workflow name must be a str, not {type(name).__name__}")
        if description is not None and not isinstance(description, str):
            raise TypeError("a workflow description must be a str or None")
        if timeout is not None:
            timeout = seconds(f"workflow '{name}': timeout", timeout, allow_zero=False)
        if isinstance(tasks, Task):
            tasks = [tasks]
        listed: list[Task] = []
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"workflow '{name}': expected tasks made with @task, got {t!r}")
            listed.append(t)
        all_tasks = list(listed)
        ids = {t.id for t in listed}
        pending = [d for t in listed for d in t._dependency_tasks]
        while pending:
            dep = pending.pop(0)
            if dep.id not in ids:
                ids.add(dep.id)
                all_tasks.append(dep)
                pending.extend(dep._dependency_tasks)
        order, version = _native.register_workflow(
            name,
            [(t.id, t.dependencies, t.fingerprint) for t in all_tasks],
            description,
            timeout,
        )
        self.name = name
        self.description = description
        self.tasks: list[Task] = all_tasks
        self.version: str = version
        self.timeout = timeout
        self._order: list[str] = order
        _defined[name] = self

    def topological_order(self) -> list[str]:
        """Task ids in the order the engine merges their writes (dependencies first)."""
        return list(self._order)

    def _ensure_registered(self) -> None:
        """Makes this definition the registered one again if another replaced it."""
        if _native.workflow_version(self.name) != self.version:
            _native.register_workflow(
                self.name,
                [(t.id, t.dependencies, t.fingerprint) for t in self.tasks],
                self.description,
                self.timeout,
            )

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        """Pickles the workflow by its name: it unpickles to the workflow defined under
        that name in the unpickling process (the latest definition)."""
        return _defined_workflow, (self.name,)

    def __copy__(self) -> Workflow:
        """A workflow is immutable: its copy is itself."""
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Workflow:
        """A workflow is immutable: its deep copy is itself."""
        return self

    def __repr__(self) -> str:
        return f"Workflow({self.name!r}, tasks={self._order!r}, version={self.version!r})"

    def _repr_html_(self) -> str:
        from html import escape

        position = {task_id: i for i, task_id in enumerate(self._order)}
        rows = "".join(
            f"<tr><td>{escape(t.id)}</td><td>{escape(', '.join(t.dependencies)) or '-'}</td></tr>"
            for t in sorted(self.tasks, key=lambda t: position[t.id])
        )
        return (
            f"<b>Workflow {escape(self.name)}</b> <small>version {escape(self.version)}</small>"
            f"<table><tr><th>task</th><th>depends on</th></tr>{rows}</table>"
        )
