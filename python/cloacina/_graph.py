"""Drawing a workflow's DAG: SVG (for notebooks), DOT, Mermaid and ASCII.

The SVG comes from our own layered layout: no graphviz, no JavaScript, no network, and
the same picture for the same graph every time. Tasks go left to right by depth (a task
one column right of its deepest dependency); each column is ordered to keep edges short
(a few sweeps of the barycentre heuristic); a column holding more than ``MAX_ROWS``
tasks shows the first ones and a "+N more" box, so a graph of hundreds of tasks stays
readable. Lines and text use ``currentColor``, so the drawing follows the notebook's
light or dark theme; status colours are mid-tones readable on both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from html import escape

_ARROW = "@arrow@"
"""Stands for the arrowhead's id while a drawing is built."""

MAX_ROWS = 12
"""Most tasks drawn in one column; the rest are summed up in one box."""

MAX_COLUMNS = 15
"""Most columns (depths) drawn: past that, the first and last seven are drawn and the
tasks between them are summed up in one box."""

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 150, 28, 50, 12, 8

STATUS_COLOURS = {
    "completed": "#3f9c5a",
    "failed": "#d0463c",
    "upstream_failed": "#c77c2e",
    "skipped": "#8c8c8c",
    "cancelled": "#8c8c8c",
    "running": "#3b7dd8",
    "ready": "#7aa7e6",
    "pending": "#b3b3b3",
}
"""Fill of a task box by status (RunResult's display); none for a workflow."""


def columns(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Tasks by depth, each column ordered to keep edges short. ``order`` is a
    topological order; ``deps`` maps a task to its dependencies."""
    depth: dict[str, int] = {}
    for task in order:
        depth[task] = 1 + max((depth[d] for d in deps.get(task, ()) if d in depth), default=-1)
    cols: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task in order:
        cols[depth[task]].append(task)
    successors: dict[str, list[str]] = {t: [] for t in order}
    for task in order:
        for d in deps.get(task, ()):
            if d in successors:
                successors[d].append(task)
    for sweep in range(4):  # alternate left-to-right and right-to-left passes
        forward = sweep % 2 == 0
        indices = range(1, len(cols)) if forward else range(len(cols) - 2, -1, -1)
        for i in indices:
            neighbour = cols[i - 1] if forward else cols[i + 1]
            rank = {t: r for r, t in enumerate(neighbour)}

            def barycentre(task: str, rank: dict[str, int] = rank, fwd: bool = forward) -> float:
                linked = [
                    rank[n] for n in (deps.get(task, ()) if fwd else successors[task]) if n in rank
                ]
                return sum(linked) / len(linked) if linked else float("inf")

            position = {t: p for p, t in enumerate(cols[i])}
            cols[i].sort(key=lambda t: (barycentre(t), position[t]))
    return cols


def to_svg(
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    status: Mapping[str, str] | None = None,
    title: str = "",
) -> str:
    """The DAG as an SVG document (boxes coloured by ``status`` when given). A column of
    more than ``MAX_ROWS`` tasks ends in a "+N more" box, and a DAG deeper than
    ``MAX_COLUMNS`` shows its first and last columns around one box for the rest."""
    cols = columns(order, deps)
    gap: int | None = None  # the column standing for the columns not drawn
    if len(cols) > MAX_COLUMNS:
        keep = (MAX_COLUMNS - 1) // 2
        gap = keep
        cols = [*cols[:keep], [t for col in cols[keep:-keep] for t in col], *cols[-keep:]]
    where: dict[str, tuple[float, float]] = {}
    boxes: list[str] = []
    height = 0.0
    tallest = max(
        (1 if c == gap else min(len(col), MAX_ROWS) for c, col in enumerate(cols)), default=1
    )
    for c, col in enumerate(cols):
        shown = [] if c == gap else col if len(col) <= MAX_ROWS else col[: MAX_ROWS - 1]
        rows = 1 if c == gap else min(len(col), MAX_ROWS)
        x = PAD + c * (NODE_W + GAP_X)
        # Each column centred on the tallest one.
        top = PAD + (tallest - rows) * (NODE_H + GAP_Y) / 2
        for r, task in enumerate(shown):
            y = top + r * (NODE_H + GAP_Y)
            where[task] = (x, y)
            fill = STATUS_COLOURS.get((status or {}).get(task, ""), "none")
            label = task if len(task) <= 20 else task[:19] + "…"
            tip = f"{task}: {status[task]}" if status and task in status else task
            boxes.append(
                f'<g><title>{escape(tip)}</title><rect x="{x}" y="{y}" width="{NODE_W}" '
                f'height="{NODE_H}" rx="6" fill="{fill}" fill-opacity="{0.85 if status else 0}" '
                f'stroke="currentColor" stroke-opacity="0.6"/>'
                f'<text x="{x + NODE_W / 2}" y="{y + NODE_H / 2 + 4}" text-anchor="middle" '
                f'font-family="sans-serif" font-size="12" fill="currentColor">'
                f"{escape(label)}</text></g>"
            )
        if len(col) > len(shown):
            y = top + len(shown) * (NODE_H + GAP_Y)
            hidden = col[len(shown) :]
            counts: dict[str, int] = {}
            for task in hidden:
                key = (status or {}).get(task, "")
                counts[key] = counts.get(key, 0) + 1
            detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s)
            names = ", ".join(hidden[:20]) + (f", … ({len(hidden)} in all)" if hidden[20:] else "")
            boxes.append(
                f'<g><title>{escape(names)}</title><rect x="{x}" y="{y}" '
                f'width="{NODE_W}" height="{NODE_H}" rx="6" fill="none" stroke="currentColor" '
                f'stroke-dasharray="4 3" stroke-opacity="0.6"/><text x="{x + NODE_W / 2}" '
                f'y="{y + NODE_H / 2 + 4}" text-anchor="middle" font-family="sans-serif" '
                f'font-size="12" fill="currentColor">+{len(hidden)} more</text></g>'
            )
            for task in hidden:
                where[task] = (x, y)
            if detail:
                boxes[-1] = boxes[-1].replace("</title>", f" ({escape(detail)})</title>", 1)
        height = max(height, PAD + rows * (NODE_H + GAP_Y))
    edges: list[str] = []
    seen: set[tuple[tuple[float, float], tuple[float, float]]] = set()
    for task in order:
        for d in deps.get(task, ()):
            if d not in where or task not in where:
                continue
            (x1, y1), (x2, y2) = where[d], where[task]
            if ((x1, y1), (x2, y2)) in seen or (x1, y1) == (x2, y2):
                continue  # edges into or out of a "+N more" box once; none within it
            seen.add(((x1, y1), (x2, y2)))
            sx, sy, ex, ey = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
            mid = (sx + ex) / 2
            edges.append(
                f'<path d="M{sx},{sy} C{mid},{sy} {mid},{ey} {ex - 4},{ey}" fill="none" '
                f'stroke="currentColor" stroke-opacity="0.5" marker-end="url(#{_ARROW})"/>'
            )
    width = PAD * 2 + max(len(cols), 1) * NODE_W + max(len(cols) - 1, 0) * GAP_X
    height = max(height, PAD + NODE_H + GAP_Y) + PAD
    label = escape(title) if title else "workflow"
    body = "".join(edges) + "".join(boxes)
    # The arrowhead's id is unique to this drawing (and deterministic): a page showing
    # several drawings must not have two elements with one id.
    arrow = "cloacina-arrow-" + hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()[:12]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:g}" height="{height:g}" '
        f'viewBox="0 0 {width:g} {height:g}" role="img" aria-label="{label}" '
        'style="color: inherit; max-width: 100%">'
        f'<defs><marker id="{arrow}" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="currentColor" '
        'fill-opacity="0.6"/></marker></defs>' + body.replace(_ARROW, arrow) + "</svg>"
    )


def _quote(text: str) -> str:
    """A DOT string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mermaid_text(text: str) -> str:
    """Text inside a Mermaid label."""
    return text.replace('"', "#quot;")


def to_dot(name: str, order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> str:
    """Graphviz DOT, left to right."""
    lines = [f"digraph {_quote(name)} {{", "  rankdir=LR;"]
    lines += [f"  {_quote(t)};" for t in order]
    lines += [f"  {_quote(d)} -> {_quote(t)};" for t in order for d in deps.get(t, ())]
    return "\n".join([*lines, "}"])


def to_mermaid(order: Sequence[str], deps: Mapping[str, Sequence[str]]) -> str:
    """A Mermaid flowchart, left to right."""
    ids = {t: f"t{i}" for i, t in enumerate(order)}
    lines = ["flowchart LR"] + [f'  {ids[t]}["{_mermaid_text(t)}"]' for t in order]
    lines += [f"  {ids[d]} --> {ids[t]}" for t in order for d in deps.get(t, ()) if d in ids]
    return "\n".join(lines)


def to_ascii(
    name: str,
    version: str,
    order: Sequence[str],
    deps: Mapping[str, Sequence[str]],
    marks: Mapping[str, str] | None = None,
) -> str:
    """One task a line, in merge order, with what it depends on; ``marks`` (a run's task
    statuses, say) are shown in a column before the task ids."""
    lines = [f"workflow '{name}' (version {version})"]
    width = max((len(m) for m in marks.values()), default=0) if marks else 0
    for t in order:
        after = f"  <- {', '.join(deps.get(t, ()))}" if deps.get(t) else ""
        mark = f"{marks.get(t, ''):<{width}}  " if marks else ""
        lines.append(f"  {mark}{t}{after}")
    return "\n".join(lines)
