"""``Workflow``: a named DAG of tasks, validated when it is defined."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cloacina._durations import seconds
from cloacina.errors import WorkflowError
from cloacina.task import Task, defined_task

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

    A workflow is its name and the ids of the tasks it lists: every run (and every
    ``resume`` or recovery) uses the current definition of each task (code,
    dependencies, options), so redefining a task in a notebook cell is picked up by the
    next run, and :attr:`version` changes with it. A dependency given as a ``Task``
    object that is not listed is pulled in. Validated at definition and again before a
    run after a task changed: an empty workflow, duplicate ids, unknown dependency ids
    and cycles raise :class:`cloacina.WorkflowError`. Defining a workflow again under
    the same name replaces the previous definition.
    """

    __slots__ = ("_listed", "_order", "_version", "description", "name", "timeout")

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
        listed: list[str] = []
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"workflow '{name}': expected tasks made with @task, got {t!r}")
            listed.append(t.id)
        from cloacina import _native

        order, version = _native.register_workflow(name, listed, description, timeout)
        self.name = name
        self.description = description
        self.timeout = timeout
        self._listed = listed
        self._order: list[str] = order
        self._version: str = version
        _defined[name] = self

    def _refresh(self) -> None:
        """Resolves the workflow from its tasks' current definitions (and makes this
        definition the registered one if another replaced it); ``WorkflowError`` if an
        edit broke it."""
        from cloacina import _native

        self._order, self._version = _native.current_workflow(
            self.name, self._listed, self.description, self.timeout
        )

    @property
    def version(self) -> str:
        """A fingerprint of the tasks as defined now: their ids, dependencies, code and
        options. It changes when any of them does."""
        self._refresh()
        return self._version

    @property
    def tasks(self) -> list[Task]:
        """The workflow's tasks as defined now (pulled-in ones included), in order."""
        self._refresh()
        return [defined_task(task_id) for task_id in self._order]

    def topological_order(self) -> list[str]:
        """Task ids in the order the engine merges their writes (dependencies first)."""
        self._refresh()
        return list(self._order)

    def _ensure_registered(self) -> None:
        """Before a run: this definition, resolved from the current task definitions."""
        self._refresh()

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
        return f"Workflow({self.name!r}, tasks={self._order!r}, version={self._version!r})"

    def _drawing(self) -> tuple[list[str], dict[str, list[str]]]:
        tasks = self.tasks
        return [t.id for t in tasks], {t.id: list(t.dependencies) for t in tasks}

    def to_svg(self) -> str:
        """The DAG as SVG: our own layered layout, left to right, following the page's
        light or dark theme (no graphviz, no JavaScript)."""
        from cloacina import _graph

        order, deps = self._drawing()
        return _graph.to_svg(order, deps, title=self.name)

    def to_dot(self) -> str:
        """The DAG in Graphviz's DOT language."""
        from cloacina import _graph

        return _graph.to_dot(self.name, *self._drawing())

    def to_mermaid(self) -> str:
        """The DAG as a Mermaid flowchart."""
        from cloacina import _graph

        return _graph.to_mermaid(*self._drawing())

    def to_ascii(self) -> str:
        """The tasks in merge order, one a line, with their dependencies."""
        from cloacina import _graph

        return _graph.to_ascii(self.name, self.version, *self._drawing())

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        """A notebook shows the name, version and DAG (SVG); text elsewhere."""
        from html import escape

        header = (
            f"<div><b>Workflow {escape(self.name)}</b> <small>version "
            f"{escape(self.version)}, {len(self._order)} tasks</small></div>"
        )
        return {"text/html": header + self.to_svg(), "text/plain": repr(self)}
