"""A run's notebook display: a status header, the DAG coloured by task status, a table of
the tasks (status, attempts, duration, the first line of the error with its traceback
folded), and a timeline of the attempts. Plain HTML and SVG: no JavaScript, no network;
colours readable in light and dark themes."""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from cloacina import _graph

ROW_H, LABEL_W, BAR_W = 18, 160, 480
"""The timeline's row height, label column and bar area, in pixels."""


def run_html(result: Any) -> str:
    """The whole display of ``result`` (a ``RunResult``)."""
    tasks = list(result.tasks.values())
    status = {t.task_id: t.status for t in tasks}
    deps = {t.task_id: list(t.dependencies) for t in tasks}
    colour = _graph.STATUS_COLOURS.get(result.status, "#8c8c8c")
    duration = f", {_seconds(result.duration)}" if result.duration is not None else ""
    error = (
        f"<div style='margin: 4px 0'>{escape(result.error.splitlines()[0])}</div>"
        if result.error
        else ""
    )
    header = (
        f"<div><b>Run of {escape(result.workflow)}</b> "
        f"<span style='background: {colour}; color: white; padding: 0 6px; border-radius: 4px'>"
        f"{escape(result.status)}</span> <small>{escape(result.run_id)}{duration}</small></div>"
        + error
    )
    return (
        header
        + _graph.to_svg([t.task_id for t in tasks], deps, status=status, title=result.workflow)
        + task_table(tasks)
        + timeline(tasks)
    )


def task_table(tasks: list[Any]) -> str:
    """One row per task; an error's first line, its traceback folded under it."""
    rows = []
    for t in tasks:
        detail = ""
        if t.error:
            first = escape(t.error.splitlines()[0])
            detail = (
                f"<details><summary>{first}</summary><pre>{escape(t.traceback)}</pre></details>"
                if t.traceback
                else first
            )
        elif t.reason:
            detail = escape(t.reason)
        rows.append(
            f"<tr><td>{escape(t.task_id)}</td><td>{escape(t.status)}</td><td>{t.attempts}</td>"
            f"<td>{_seconds(t.duration) if t.duration is not None else ''}</td>"
            f"<td style='text-align: left'>{detail}</td></tr>"
        )
    return (
        "<table><tr><th>task</th><th>status</th><th>attempts</th><th>duration</th>"
        f"<th style='text-align: left'>error or reason</th></tr>{''.join(rows)}</table>"
    )


def timeline(tasks: list[Any]) -> str:
    """A Gantt chart of every attempt (SVG), on one time axis from the first start."""
    spans: list[tuple[int, str, datetime, datetime]] = []
    for row, t in enumerate(tasks):
        for a in t.history:
            if a.started_at is not None and a.finished_at is not None:
                spans.append((row, a.status, a.started_at, a.finished_at))
        if t.status == "running" and t.started_at is not None:
            spans.append((row, "running", t.started_at, t.started_at))
    if not spans:
        return ""
    start = min(s[2] for s in spans)
    end = max(s[3] for s in spans)
    total = max((end - start).total_seconds(), 1e-6)
    bars = []
    for row, status, began, ended in spans:
        x = LABEL_W + (began - start).total_seconds() / total * BAR_W
        width = max((ended - began).total_seconds() / total * BAR_W, 2)
        fill = _graph.STATUS_COLOURS.get(status, "#8c8c8c")
        bars.append(
            f'<rect x="{x:.1f}" y="{row * ROW_H + 3}" width="{width:.1f}" height="{ROW_H - 6}" '
            f'fill="{fill}"><title>{escape(tasks[row].task_id)}: {escape(status)}, '
            f"{_seconds(ended - began)}</title></rect>"
        )
    labels = "".join(
        f'<text x="0" y="{row * ROW_H + ROW_H - 5}" font-family="sans-serif" font-size="11" '
        f'fill="currentColor">{escape(t.task_id[:24])}</text>'
        for row, t in enumerate(tasks)
    )
    height = len(tasks) * ROW_H + 16
    axis = (
        f'<text x="{LABEL_W}" y="{height - 2}" font-family="sans-serif" font-size="10" '
        f'fill="currentColor">0</text><text x="{LABEL_W + BAR_W}" y="{height - 2}" '
        f'text-anchor="end" font-family="sans-serif" font-size="10" fill="currentColor">'
        f"{_seconds(end - start)}</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + BAR_W + 8}" '
        f'height="{height}" role="img" aria-label="timeline" style="color: inherit">'
        + labels
        + "".join(bars)
        + axis
        + "</svg>"
    )


def _seconds(span: Any) -> str:
    value = span.total_seconds()
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
