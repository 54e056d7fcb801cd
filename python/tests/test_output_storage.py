"""Where task outputs are stored: small ones in their task's row, large ones appended to
`outputs` on SQLite (migration 7); the view `task_outputs` shows both on every backend,
and every path that reads outputs back (results, resume, purge) finds both."""

from __future__ import annotations

import json
import threading

import pytest
from cloacina import Runner, Workflow, task

BIG = "x" * 1000


def two_writers(name: str, gate: threading.Event | None = None) -> Workflow:
    @task(id=f"{name}_big")
    def big(ctx):
        ctx["big"] = BIG

    @task(id=f"{name}_small")
    def small(ctx):
        ctx["small"] = 1

    @task(id=f"{name}_reader", dependencies=[big, small])
    def reader(ctx):
        if gate is not None and not gate.is_set():
            raise RuntimeError("not yet")
        return {"lengths": [len(ctx["big"]), ctx["small"]]}

    return Workflow(name, [reader])


def test_small_and_large_outputs_read_back_the_same(runner, rows):
    result = runner.run(two_writers("sizes_wf"), {})
    assert result.status == "completed", result.error
    assert result.context == {"big": BIG, "small": 1, "lengths": [1000, 1]}
    assert runner.get_run(result.run_id).context == result.context
    stored = {
        r["task_id"]: json.loads(r["output"])
        for r in rows("SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id)
    }
    assert stored == {
        "sizes_wf_big": {"big": BIG},
        "sizes_wf_small": {"small": 1},
        "sizes_wf_reader": {"lengths": [1000, 1]},
    }


@pytest.mark.sqlite_only("the SQLite layout: small outputs inline, large ones in `outputs`")
def test_a_large_output_is_appended_apart_and_purged_with_its_run(runner, rows):
    from datetime import timedelta

    result = runner.run(two_writers("apart_wf"), {})
    task_rows = {
        r["task_id"]: r
        for r in rows(
            "SELECT task_id, output_inline, output_id FROM run_tasks WHERE run_id = ?",
            result.run_id,
        )
    }
    assert task_rows["apart_wf_small"]["output_inline"] == '{"small":1}'
    assert task_rows["apart_wf_small"]["output_id"] is None
    assert task_rows["apart_wf_big"]["output_inline"] is None
    [(big_row,)] = [
        (r["output"],)
        for r in rows(
            "SELECT output FROM outputs WHERE id = ?", task_rows["apart_wf_big"]["output_id"]
        )
    ]
    assert json.loads(big_row) == {"big": BIG}
    assert runner.purge(older_than=timedelta(0)) == 1
    assert rows("SELECT count(*) AS n FROM outputs")[0]["n"] == 0


def test_a_resumed_run_sees_the_large_outputs_of_its_completed_tasks(db_url):
    gate = threading.Event()
    wf = two_writers("resume_big_wf", gate)
    with Runner(db_url) as runner:
        first = runner.run(wf, {})
        assert first.status == "failed"
        assert first.tasks["resume_big_wf_big"].status == "completed"
    gate.set()
    with Runner(db_url) as runner:
        again = runner.resume(first.run_id).wait(timeout=30)
    assert again.status == "completed", again.error
    assert again.tasks["resume_big_wf_big"].attempts == 1, "a completed task never runs again"
    assert again.context["lengths"] == [1000, 1]
