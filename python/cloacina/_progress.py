"""Live progress of a run that a caller waits for: one line rewritten in place on a
terminal, a notebook output updated in place (an IPython display handle; no widgets).

``Runner.run(..., progress=None)`` turns it on in a notebook or when stderr is a
terminal, off otherwise. Nothing here imports IPython unless a notebook is running it.
"""

from __future__ import annotations

import sys
import time
from html import escape
from typing import IO, Any, Protocol

INTERVAL = 0.25
"""Seconds between two updates."""


class Display(Protocol):
    """Where progress goes."""

    def update(self, counts: dict[str, int], total: int, elapsed: float) -> None: ...

    def finish(self, result: Any) -> None: ...


def choose(progress: bool | None) -> type[Display] | None:
    """The display to use: ``progress`` True, False, or None for automatic (a notebook,
    else a terminal on stderr, else none)."""
    if progress is False:
        return None
    if _in_notebook():
        return NotebookDisplay
    stream = sys.stderr
    if progress or (stream is not None and stream.isatty()):
        return TerminalDisplay
    return None


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython is already imported there)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def summary(counts: dict[str, int], total: int, elapsed: float) -> str:
    """``12/50 tasks done (1 failed, 3 running), 4.2 s``."""
    done = sum(
        n
        for status, n in counts.items()
        if status in ("completed", "failed", "skipped", "upstream_failed", "cancelled")
    )
    extra = [
        f"{counts[status]} {status.replace('_', ' ')}"
        for status in ("failed", "upstream_failed", "running")
        if counts.get(status)
    ]
    detail = f" ({', '.join(extra)})" if extra else ""
    return f"{done}/{total} tasks done{detail}, {elapsed:.1f} s"


class TerminalDisplay:
    """One line on stderr, rewritten with ``\\r``, ended with a newline."""

    def __init__(self, workflow: str, stream: IO[str] | None = None) -> None:
        self.workflow = workflow
        self.stream = stream if stream is not None else sys.stderr
        self.width = 0

    def _write(self, text: str, end: str = "") -> None:
        line = f"cloacina: {self.workflow}: {text}"
        padding = " " * max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write(f"\r{line}{padding}{end}")
        self.stream.flush()

    def update(self, counts: dict[str, int], total: int, elapsed: float) -> None:
        self._write(summary(counts, total, elapsed))

    def finish(self, result: Any) -> None:
        counts: dict[str, int] = {}
        for task in result.tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        self._write(
            f"{result.status}: {summary(counts, len(result.tasks), _seconds(result))}", "\n"
        )


class NotebookDisplay:
    """A notebook output updated in place, ending as the run's own display."""

    def __init__(self, workflow: str) -> None:
        import importlib

        ipython_display: Any = importlib.import_module("IPython.display")  # untyped
        self.workflow = workflow
        self._html: Any = ipython_display.HTML
        self.handle: Any = ipython_display.display(
            self._html(self._body("starting", "")), display_id=True
        )

    def _body(self, status: str, text: str) -> str:
        return (
            f"<div style='font-family: monospace'><b>{escape(self.workflow)}</b> "
            f"<span>{escape(status)}</span> {escape(text)}</div>"
        )

    def update(self, counts: dict[str, int], total: int, elapsed: float) -> None:
        if self.handle is not None:
            self.handle.update(self._html(self._body("running", summary(counts, total, elapsed))))

    def finish(self, result: Any) -> None:
        if self.handle is not None:
            self.handle.update(result)
            # The cell's own result (`runner.run(wf)` as its last line) is this run:
            # shown once in full is enough.
            object.__setattr__(result, "_shown_in_cell", _cell_number())


def _cell_number() -> int | None:
    """The number of the notebook cell running now, if IPython is loaded (never imported
    here)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return None if shell is None else int(shell.execution_count)


def shown_in_this_cell(result: Any) -> bool:
    """Whether live progress already left ``result``'s full display in the cell running
    now."""
    shown = getattr(result, "_shown_in_cell", None)
    return shown is not None and shown == _cell_number()


def _seconds(result: Any) -> float:
    duration = getattr(result, "duration", None)
    if duration is None:
        return 0.0
    return (
        float(duration.total_seconds()) if hasattr(duration, "total_seconds") else float(duration)
    )


def follow(runner: Any, run_id: str, workflow: str, display: type[Display]) -> Any:
    """Waits for run ``run_id``, updating ``display`` every ``INTERVAL`` seconds from its
    task counts (one light read: no context, no output), and returns its result."""
    shown: Display = display(workflow)  # type: ignore[call-arg]
    started = time.monotonic()
    engine = runner._engine_or_raise()
    while not engine.wait(run_id, INTERVAL, False):
        rows = engine.list_runs(None, None, 1, run_id)
        counts: dict[str, int] = dict(rows[0]["task_counts"]) if rows else {}
        shown.update(counts, sum(counts.values()), time.monotonic() - started)
    result = runner._ended(run_id)
    shown.finish(result)
    return result
