"""Drawing a workflow: SVG for notebooks (our own layered layout), DOT, Mermaid, ASCII."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from cloacina import Workflow, _graph, task

SVG = "{http://www.w3.org/2000/svg}"


def diamond() -> Workflow:
    @task(id="g_a")
    def a(ctx):
        pass

    @task(id="g_b", dependencies=["g_a"])
    def b(ctx):
        pass

    @task(id="g_c", dependencies=["g_a"])
    def c(ctx):
        pass

    @task(id="g_d", dependencies=["g_b", "g_c"])
    def d(ctx):
        pass

    return Workflow("g_diamond", [a, b, c, d])


def test_columns_follow_depth_and_keep_edges_short():
    deps = {"r1": [], "r2": [], "x": ["r2"], "y": ["r1"]}
    cols = _graph.columns(["r1", "r2", "x", "y"], deps)
    assert cols[0] == ["r1", "r2"]
    assert cols[1] == ["y", "x"]  # y beside r1, x beside r2: no crossing
    assert _graph.columns(["a", "b"], {"b": ["a"]}) == [["a"], ["b"]]


def test_svg_is_valid_deterministic_and_follows_the_theme():
    wf = diamond()
    svg = wf.to_svg()
    assert svg == wf.to_svg()
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels == ["g_a", "g_b", "g_c", "g_d"]
    assert len(list(root.iter(f"{SVG}path"))) == 1 + 4  # the arrow head, four edges
    assert "currentColor" in svg and "script" not in svg.lower()
    assert "<svg" in wf._repr_mimebundle_()["text/html"]
    assert wf._repr_mimebundle_()["text/plain"] == repr(wf)


def test_each_drawing_names_its_own_arrowhead():
    # Several drawings on one page (a workflow, a run's DAG) must not share an id.
    first = _graph.to_svg(["a", "b"], {"b": ["a"]})
    second = _graph.to_svg(["a", "b", "c"], {"b": ["a"], "c": ["b"]})
    ids = []
    for svg in (first, second):
        root = ET.fromstring(svg)
        (marker,) = root.iter(f"{SVG}marker")
        ends = {p.get("marker-end") for p in root.iter(f"{SVG}path") if p.get("marker-end")}
        assert ends == {f"url(#{marker.get('id')})"}
        ids.append(marker.get("id"))
    assert ids[0] != ids[1]


def test_a_wide_column_collapses_into_a_box():
    deps = {"root": []} | {f"t{i}": ["root"] for i in range(300)}
    order = list(deps)
    svg = _graph.to_svg(order, deps, status={"t299": "failed", "t298": "failed"})
    root = ET.fromstring(svg)
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert len(labels) == 1 + _graph.MAX_ROWS
    assert labels[-1] == f"+{300 - (_graph.MAX_ROWS - 1)} more"
    assert "2 failed" in svg  # the box's tooltip counts what it hides
    assert len(svg) < 20_000


def test_a_deep_dag_shows_its_first_and_last_columns_around_one_box():
    order = [f"s{i}" for i in range(300)]
    deps = {f"s{i}": [f"s{i - 1}"] for i in range(1, 300)} | {"s0": []}
    status = {t: "completed" for t in order} | {"s150": "failed"}
    svg = _graph.to_svg(order, deps, status=status)
    root = ET.fromstring(svg)
    keep = (_graph.MAX_COLUMNS - 1) // 2
    labels = [t.text for t in root.iter(f"{SVG}text")]
    hidden = 300 - 2 * keep
    assert labels == [*order[:keep], f"+{hidden} more", *order[-keep:]]
    assert float(root.get("width")) < (_graph.MAX_COLUMNS + 1) * (_graph.NODE_W + _graph.GAP_X)
    # One edge between each pair of neighbouring boxes, the box included; none inside it.
    edges = [p for p in root.iter(f"{SVG}path") if p.get("marker-end")]
    assert len(edges) == len(labels) - 1
    assert f"{hidden - 1} completed, 1 failed" in svg  # the box's tooltip counts what it hides
    assert len(svg) < 20_000


def test_status_colours_the_boxes():
    svg = _graph.to_svg(["a", "b"], {"b": ["a"]}, status={"a": "completed", "b": "failed"})
    assert _graph.STATUS_COLOURS["completed"] in svg
    assert _graph.STATUS_COLOURS["failed"] in svg


def test_dot_mermaid_and_ascii_quote_names():
    deps = {'say "hi"': [], "b\\c": ['say "hi"']}
    dot = _graph.to_dot('w "1"', list(deps), deps)
    assert 'digraph "w \\"1\\"" {' in dot and '"say \\"hi\\"" -> "b\\\\c";' in dot
    mermaid = _graph.to_mermaid(list(deps), deps)
    assert 't0["say #quot;hi#quot;"]' in mermaid and "t0 --> t1" in mermaid
    wf = diamond()
    assert wf.to_ascii().splitlines()[1:] == [
        "  g_a",
        "  g_b  <- g_a",
        "  g_c  <- g_a",
        "  g_d  <- g_b, g_c",
    ]
