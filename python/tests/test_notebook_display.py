"""What a notebook shows of a Workflow and of a RunResult, read back from a notebook
executed by nbclient in a real Jupyter kernel (kernel_helpers.run_notebook).

The drawings are checked for their structure, not their text: the DAG's SVG is parsed and
every task must be exactly one labelled box, and every dependency exactly one edge whose
start lies on the right border of its source's box and whose end on the left border of its
target's box (the edges carry no names, so their geometry says what they join). The run's
display must colour each box by its task's status, list each task once in its table (the
failed one with its error's first line and its traceback folded), and draw one timeline bar
per attempt. ``test_the_structure_checks_catch_a_missing_edge_or_node`` shows that these
checks fail on a drawing with an edge or a box taken out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cloacina._graph import STATUS_COLOURS
from kernel_helpers import Cell, run_notebook

SVG = "{http://www.w3.org/2000/svg}"
TOLERANCE = 6.0
"""Pixels an edge's end may be off its box's border (the arrow head stops short of it)."""

WORKFLOW = "nb_display"

# A diamond (extract -> clean_left, clean_right -> join), fan-ins (join + lookup -> enrich;
# validate + clean_left + lookup -> report), an edge that skips columns (clean_left ->
# report), two roots; validate fails twice (one retry) and report is upstream_failed.
DEPENDENCIES: dict[str, list[str]] = {
    "extract": [],
    "clean_left": ["extract"],
    "clean_right": ["extract"],
    "join": ["clean_left", "clean_right"],
    "lookup": [],
    "enrich": ["join", "lookup"],
    "validate": ["enrich"],
    "report": ["validate", "clean_left", "lookup"],
}
EDGES = {(d, t) for t, deps in DEPENDENCIES.items() for d in deps}
STATUSES = {
    **{t: "completed" for t in DEPENDENCIES},
    "validate": "failed",
    "report": "upstream_failed",
}
ATTEMPTS = {**{t: 1 for t in DEPENDENCIES}, "validate": 2, "report": 0}

DEFINE = f"""
from cloacina import Runner, Workflow, task

@task
def extract(ctx):
    return {{"rows": 3}}

@task(dependencies=[extract])
def clean_left(ctx):
    return {{"left": ctx["rows"]}}

@task(dependencies=[extract])
def clean_right(ctx):
    return {{"right": ctx["rows"]}}

@task(dependencies=[clean_left, clean_right])
def join(ctx):
    return {{"joined": ctx["left"] + ctx["right"]}}

@task
def lookup(ctx):
    return {{"ref": 1}}

@task(dependencies=[join, lookup])
def enrich(ctx):
    return {{"enriched": ctx["joined"] + ctx["ref"]}}

@task(dependencies=[enrich], retries=1, retry_delay=0)
def validate(ctx):
    raise ValueError(f"bad rows: {{ctx['enriched']}}\\nsecond line of the message")

@task(dependencies=[validate, clean_left, lookup])
def report(ctx):
    return {{"report": True}}

wf = Workflow({WORKFLOW!r}, [extract, clean_left, clean_right, join, lookup, enrich, validate,
                             report])
emit(repr(wf))
wf
"""

RUN = """
runner = Runner(URL)
result = runner.run(wf, progress=False)
emit({
    "run_id": result.run_id,
    "status": result.status,
    "error": result.error,
    "repr": repr(result),
    "tasks": {
        t.task_id: {
            "status": t.status,
            "attempts": t.attempts,
            "history": [a.status for a in t.history],
            "error": t.error,
            "traceback": t.traceback,
            "reason": t.reason,
            "dependencies": list(t.dependencies),
        }
        for t in result.tasks.values()
    },
})
result
"""


# --- reading the outputs -----------------------------------------------------------------------


class _HtmlTree(HTMLParser):
    """HTML into an ElementTree (under a ``root`` element); a badly nested tag fails."""

    VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "wbr", "col", "area", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = ET.TreeBuilder()
        self.builder.start("root", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.builder.start(tag, {k: v or "" for k, v in attrs})
        if tag in self.VOID:
            self.builder.end(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.builder.start(tag, {k: v or "" for k, v in attrs})
        self.builder.end(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID:
            self.builder.end(tag)

    def handle_data(self, data: str) -> None:
        self.builder.data(data)

    @classmethod
    def parse(cls, html: str) -> ET.Element:
        parser = cls()
        parser.feed(html)
        parser.close()
        parser.builder.end("root")
        return parser.builder.close()


def parse_html(html: str) -> ET.Element:
    return _HtmlTree.parse(html)


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext())


def svgs_in(html: str) -> list[ET.Element]:
    """Each ``<svg>…</svg>`` of the html, parsed as the XML it must be."""
    found = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    return [ET.fromstring(svg) for svg in found]


def numbers(text: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text)]


@dataclass
class Box:
    label: str
    title: str
    x: float
    y: float
    w: float
    h: float
    fill: str

    def on_right_border(self, px: float, py: float) -> bool:
        return abs(px - (self.x + self.w)) <= TOLERANCE and self.y <= py <= self.y + self.h

    def on_left_border(self, px: float, py: float) -> bool:
        return abs(px - self.x) <= TOLERANCE and self.y <= py <= self.y + self.h


def outside_defs(svg: ET.Element, tag: str) -> list[ET.Element]:
    """Every ``tag`` element of the drawing, except those inside ``<defs>`` (the arrow head's
    marker is a path too)."""
    found: list[ET.Element] = []

    def walk(element: ET.Element) -> None:
        for child in element:
            if child.tag == SVG + "defs":
                continue
            if child.tag == SVG + tag:
                found.append(child)
            walk(child)

    walk(svg)
    return found


def boxes_of(svg: ET.Element) -> list[Box]:
    """The task boxes: each element holding a ``<rect>`` and a ``<text>`` (its label)."""
    boxes = []
    for group in svg.iter():
        rect, text = group.find(SVG + "rect"), group.find(SVG + "text")
        if rect is None or text is None:
            continue
        title = group.find(SVG + "title")
        boxes.append(
            Box(
                label=text_of(text),
                title="" if title is None else text_of(title),
                x=float(rect.get("x", "0")),
                y=float(rect.get("y", "0")),
                w=float(rect.get("width", "0")),
                h=float(rect.get("height", "0")),
                fill=rect.get("fill", ""),
            )
        )
    return boxes


def check_dag(svg: ET.Element, dependencies: dict[str, list[str]]) -> dict[str, Box]:
    """Asserts the drawing shows exactly ``dependencies``: one box per task, labelled with
    its id, and one edge per dependency going from the right border of the dependency's box
    to the left border of the dependent's. Returns the boxes by task id."""
    boxes = boxes_of(svg)
    labels = Counter(b.label for b in boxes)
    assert labels == Counter(list(dependencies)), (
        f"box labels {dict(labels)} != tasks {dependencies}"
    )
    by_task = {b.label: b for b in boxes}
    for b in boxes:
        assert b.w > 0 and b.h > 0, b

    edges = outside_defs(svg, "path")
    expected = {(d, t) for t, deps in dependencies.items() for d in deps}
    assert len(edges) == len(expected), f"{len(edges)} edges drawn for {len(expected)} deps"
    drawn = []
    for path in edges:
        coords = numbers(path.get("d", ""))
        assert len(coords) >= 4 and len(coords) % 2 == 0, path.get("d")
        (sx, sy), (ex, ey) = coords[:2], coords[-2:]
        sources = [b.label for b in boxes if b.on_right_border(sx, sy)]
        targets = [b.label for b in boxes if b.on_left_border(ex, ey)]
        assert len(sources) == 1, f"edge {path.get('d')} starts on the boxes {sources}"
        assert len(targets) == 1, f"edge {path.get('d')} ends on the boxes {targets}"
        drawn.append((sources[0], targets[0]))
    assert Counter(drawn) == Counter(expected), (
        f"missing {expected - set(drawn)}, unexpected {set(drawn) - expected}, "
        f"drawn twice {[e for e, n in Counter(drawn).items() if n > 1]}"
    )
    return by_task


def one_result(cell: Cell) -> dict[str, Any]:
    """The data of the cell's one ``execute_result`` (and no other display)."""
    cell.ok()
    results = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    others = [o for o in cell.outputs if o["output_type"] in ("display_data", "error")]
    assert len(results) == 1 and not others, cell.outputs
    data: dict[str, Any] = results[0]["data"]
    return data


# --- the notebook, executed once -------------------------------------------------------------


@dataclass
class Executed:
    workflow_data: dict[str, Any]
    workflow_repr: str
    run_data: dict[str, Any]
    run: dict[str, Any]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    workdir: Path = tmp_path_factory.mktemp("nb_display")
    url = "sqlite:///" + str(workdir / "nb.db")  # an absolute path: four slashes
    define, run = run_notebook(workdir, [DEFINE, RUN.replace("URL", repr(url))])
    return Executed(
        workflow_data=one_result(define),
        workflow_repr=define.value(),
        run_data=one_result(run),
        run=run.value(),
    )


# --- the workflow --------------------------------------------------------------------------------


def test_the_workflow_shows_as_html_with_its_dag_and_as_text(executed):
    data = executed.workflow_data
    assert set(data) >= {"text/html", "text/plain"}, set(data)
    assert data["text/plain"] == executed.workflow_repr
    assert data["text/plain"].startswith(f"Workflow({WORKFLOW!r}")

    html = data["text/html"]
    header = text_of(parse_html(html.split("<svg", 1)[0]))
    assert f"Workflow {WORKFLOW}" in header and f"{len(DEPENDENCIES)} tasks" in header, header
    (svg,) = svgs_in(html)
    boxes = check_dag(svg, DEPENDENCIES)
    # A workflow has no statuses: no box is coloured.
    assert {b.fill for b in boxes.values()} == {"none"}, boxes


def test_the_workflow_dag_goes_left_to_right_by_depth(executed):
    (svg,) = svgs_in(executed.workflow_data["text/html"])
    boxes = check_dag(svg, DEPENDENCIES)
    for source, target in EDGES:
        assert boxes[source].x + boxes[source].w <= boxes[target].x, (source, target)
    # One column per depth: the two roots together, the diamond's sides together.
    assert boxes["extract"].x == boxes["lookup"].x
    assert boxes["clean_left"].x == boxes["clean_right"].x
    assert len({b.x for b in boxes.values()}) == 6


# --- the run -----------------------------------------------------------------------------------


def test_the_run_is_what_the_notebook_ran(executed):
    run = executed.run
    assert run["status"] == "failed", run
    assert {t: v["status"] for t, v in run["tasks"].items()} == STATUSES, run["tasks"]
    assert {t: v["attempts"] for t, v in run["tasks"].items()} == ATTEMPTS, run["tasks"]
    assert run["tasks"]["validate"]["history"] == ["failed", "failed"], run["tasks"]
    for task_id, deps in DEPENDENCIES.items():
        assert sorted(run["tasks"][task_id]["dependencies"]) == sorted(deps), task_id
    data = executed.run_data
    assert set(data) >= {"text/html", "text/plain"}, set(data)
    assert data["text/plain"] == run["repr"]


def test_the_run_display_has_a_status_header(executed):
    run, html = executed.run, executed.run_data["text/html"]
    root = parse_html(html)
    # Everything before the DAG is the header.
    header = parse_html(html.split("<svg", 1)[0])
    text = text_of(header)
    assert f"Run of {WORKFLOW}" in text, text
    assert run["run_id"] in text, text
    badges = [s for s in header.iter("span") if text_of(s).strip() == "failed"]
    assert len(badges) == 1, text
    assert STATUS_COLOURS["failed"] in badges[0].get("style", ""), badges[0].attrib
    # The run's error, its first line only.
    first_line, rest = run["error"].split("\n", 1)
    assert first_line in text, text
    assert rest.strip() and rest.strip() not in text, text
    assert root.find(".//table") is not None


def test_the_run_dag_has_every_task_and_edge_coloured_by_status(executed):
    html = executed.run_data["text/html"]
    svgs = svgs_in(html)
    assert len(svgs) == 2, f"expected the DAG and the timeline, got {len(svgs)} SVGs"
    boxes = check_dag(svgs[0], DEPENDENCIES)
    for task_id, box in boxes.items():
        status = STATUSES[task_id]
        assert box.fill == STATUS_COLOURS[status], (task_id, status, box)
        assert box.title == f"{task_id}: {status}", box
    # The same picture as the workflow's, only coloured.
    (plain,) = svgs_in(executed.workflow_data["text/html"])
    shapes = {t: (b.x, b.y, b.w, b.h) for t, b in check_dag(plain, DEPENDENCIES).items()}
    assert {t: (b.x, b.y, b.w, b.h) for t, b in boxes.items()} == shapes


def table_rows(html: str) -> list[list[ET.Element]]:
    (table,) = parse_html(html).iter("table")
    rows = [list(tr) for tr in table.iter("tr")]
    assert rows and all(cell.tag == "th" for cell in rows[0]), "no header row"
    return rows[1:]


def test_the_run_table_has_one_row_per_task_with_the_error_folded(executed):
    run = executed.run
    rows = table_rows(executed.run_data["text/html"])
    assert len(rows) == len(DEPENDENCIES), [[text_of(c) for c in r] for r in rows]
    by_task: dict[str, list[ET.Element]] = {}
    for row in rows:
        assert all(c.tag == "td" for c in row), row
        task_id = text_of(row[0]).strip()
        assert task_id not in by_task, f"{task_id} has two rows"
        by_task[task_id] = row
    assert set(by_task) == set(DEPENDENCIES)
    for task_id, row in by_task.items():
        assert text_of(row[1]).strip() == STATUSES[task_id], task_id
        assert text_of(row[2]).strip() == str(ATTEMPTS[task_id]), task_id

    failed = run["tasks"]["validate"]
    cells = by_task["validate"]
    (details,) = [d for c in cells for d in c.iter("details")]
    summary, pre = details.find("summary"), details.find("pre")
    assert summary is not None and pre is not None, ET.tostring(details)
    assert text_of(summary).strip() == failed["error"].splitlines()[0]
    assert text_of(summary).strip() == "ValueError: bad rows: 7"
    assert "second line" not in text_of(summary)
    # The whole traceback, folded under it.
    assert text_of(pre).strip() == failed["traceback"].strip()
    assert "raise ValueError" in text_of(pre) and "second line" in text_of(pre)

    # The task downstream of the failure says why it did not run; the others, nothing.
    reason = run["tasks"]["report"]["reason"]
    assert reason and "validate" in reason
    assert reason in text_of(by_task["report"][-1])
    assert not list(by_task["report"][-1].iter("details"))
    for task_id in set(DEPENDENCIES) - {"validate", "report"}:
        assert text_of(by_task[task_id][-1]).strip() == "", task_id


def test_the_run_timeline_has_one_bar_per_attempt(executed):
    svgs = svgs_in(executed.run_data["text/html"])
    assert len(svgs) == 2
    timeline = svgs[1]
    labels = [
        (text_of(t), float(t.get("y", "0")))
        for t in timeline.iter(SVG + "text")
        if text_of(t) in DEPENDENCIES
    ]
    assert sorted(label for label, _ in labels) == sorted(DEPENDENCIES), labels
    bars = []
    for rect in timeline.iter(SVG + "rect"):
        title = rect.find(SVG + "title")
        assert title is not None, ET.tostring(rect)
        task_id, _, rest = text_of(title).partition(": ")
        status = rest.split(",", 1)[0]
        y = float(rect.get("y", "0")) + float(rect.get("height", "0")) / 2
        # The bar is on its task's row: the label nearest to it vertically.
        row = min(labels, key=lambda label: abs(label[1] - y))[0]
        assert row == task_id, f"the bar of {task_id} is on the row of {row}"
        assert rect.get("fill") == STATUS_COLOURS[status], (task_id, status, rect.attrib)
        assert float(rect.get("width", "0")) > 0
        bars.append((task_id, status, float(rect.get("x", "0"))))
    per_task = Counter(task_id for task_id, _, _ in bars)
    assert dict(per_task) == {t: n for t, n in ATTEMPTS.items() if n}, per_task
    history = executed.run["tasks"]
    for task_id in DEPENDENCIES:
        shown = [status for t, status, _ in sorted(bars, key=lambda b: b[2]) if t == task_id]
        assert shown == history[task_id]["history"], task_id
    # The retry starts after the first attempt did.
    first, second = sorted(x for t, _, x in bars if t == "validate")
    assert first <= second


def test_the_structure_checks_catch_a_missing_edge_or_node(executed):
    """check_dag fails on the same drawing with one edge, or one box, taken out."""
    html = executed.run_data["text/html"]
    (svg_text, _timeline) = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    check_dag(ET.fromstring(svg_text), DEPENDENCIES)

    edges = re.findall(r"<path [^>]*marker-end[^>]*/>", svg_text)  # not the arrow head
    assert len(edges) == len(EDGES)
    for edge in edges:
        with pytest.raises(AssertionError):
            check_dag(ET.fromstring(svg_text.replace(edge, "", 1)), DEPENDENCIES)

    nodes = re.findall(r"<g><title>.*?</g>", svg_text)
    assert len(nodes) == len(DEPENDENCIES)
    for node in nodes:
        with pytest.raises(AssertionError):
            check_dag(ET.fromstring(svg_text.replace(node, "", 1)), DEPENDENCIES)

    # An edge redrawn between other boxes (its end moved to another box's left border).
    m = re.search(r'<path d="M([\d.]+),([\d.]+) C', svg_text)
    assert m is not None
    moved = svg_text.replace(m.group(0), f'<path d="M{m.group(1)},{float(m.group(2)) + 40} C', 1)
    with pytest.raises(AssertionError):
        check_dag(ET.fromstring(moved), DEPENDENCIES)
