"""A run's notebook display: status header, the DAG coloured by status, the task table
(errors escaped, tracebacks folded), and a timeline of every attempt."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from cloacina import Runner, Workflow, _graph, task

SVG = "{http://www.w3.org/2000/svg}"


def test_a_failed_runs_display_shows_what_happened(db_url):
    calls = {"n": 0}

    @task(id="d_fetch")
    def fetch(ctx):
        ctx["x"] = 1

    @task(id="d_flaky", dependencies=["d_fetch"], retries=1, retry_delay=0.01)
    def flaky(ctx):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("first try fails")

    @task(id="d_broken", dependencies=["d_fetch"])
    def broken(ctx):
        raise ValueError("bad <input>")

    @task(id="d_join", dependencies=["d_flaky", "d_broken"])
    def join(ctx):
        pass

    with Runner(db_url) as runner:
        result = runner.run(Workflow("d_wf", [fetch, flaky, broken, join]), progress=False)
    assert result.tasks["d_join"].dependencies == ["d_flaky", "d_broken"]
    bundle = result._repr_mimebundle_()
    assert bundle["text/plain"] == repr(result)
    html = bundle["text/html"]
    assert "<b>Run of d_wf</b>" in html and ">failed</span>" in html
    # The error is escaped, and its traceback folded under its first line.
    assert "bad &lt;input&gt;" in html and "bad <input>" not in html
    assert re.search(r"<details><summary>ValueError: bad &lt;input&gt;</summary><pre>", html)
    assert "upstream task &#x27;d_broken&#x27; failed" in html  # join's reason
    dag, gantt = re.findall(r"<svg.*?</svg>", html, re.S)
    ET.fromstring(dag), ET.fromstring(gantt)
    for status in ("completed", "failed", "upstream_failed"):
        assert _graph.STATUS_COLOURS[status] in dag
    bars = [r for r in ET.fromstring(gantt).iter(f"{SVG}rect")]
    titles = [b.find(f"{SVG}title").text for b in bars]
    # Every attempt is a bar: the flaky task's failed try and its retry included.
    assert sorted(t.split(":")[0] for t in titles) == [
        "d_broken",
        "d_fetch",
        "d_flaky",
        "d_flaky",
    ]
    assert any(t.startswith("d_flaky: failed") for t in titles)
