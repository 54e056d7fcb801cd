"""Re-executing a failed run after redefining the failing task with a fix."""

from __future__ import annotations

import time
from pathlib import Path

from cloacina import Runner, Workflow, task
from durable_helpers import events_of, integrity


def check_first_pass(first: dict, a: str, b: str, c: str) -> None:
    assert first["status"] == "failed", first
    tasks = first["tasks"]
    assert tasks[a]["status"] == "completed"
    assert tasks[b]["status"] == "failed"
    assert tasks[b]["error"] == "ValueError: bug in b"
    assert tasks[c]["status"] == "skipped"


def check_second_pass(second: dict, first: dict, a: str, b: str, c: str) -> None:
    assert second["run_id"] == first["run_id"]
    assert second["status"] == "completed", second
    token = first["context"]["token"]
    # a's persisted output is reused: same token, a was not executed again.
    assert second["context"] == {
        "token": token,
        "b": "fixed:" + token,
        "c": ("fixed:" + token).upper(),
    }
    tasks = second["tasks"]
    assert tasks[a]["attempts"] == 1
    assert [(h["attempt"], h["status"]) for h in tasks[a]["history"]] == [(1, "completed")]
    assert tasks[a]["history"] == first["tasks"][a]["history"]
    # b's history keeps both passes: the failure, then the fixed attempt.
    history = tasks[b]["history"]
    assert [(h["attempt"], h["status"]) for h in history] == [(1, "failed"), (2, "completed")]
    assert history[0]["error"] == "ValueError: bug in b"
    assert history[1]["started_at"] >= history[0]["finished_at"]
    assert tasks[b]["attempts"] == 2
    assert [h["status"] for h in tasks[c]["history"]] == ["completed"]
    assert len(events_of(second, "resumed")) == 1, second["events"]


def test_resume_in_a_new_process_after_fixing_the_task(durable):
    d = durable("dur_resume_fix")
    a, b, c = (f"{d.name}_{x}" for x in "abc")

    first = d.run_child("start", "fixable", "--variant", "broken")
    check_first_pass(first, a, b, c)
    assert d.executions() == {a: 1, b: 1}

    second = d.run_child("resume", "fixable", "--variant", "fixed", "--run-id", first["run_id"])
    check_second_pass(second, first, a, b, c)
    assert d.executions() == {a: 1, b: 2, c: 1}
    assert d.log_lines() == [a, b, b, c]
    assert integrity(d.db_path) == "ok"


def test_resume_in_the_same_process_after_redefining_the_task(tmp_path: Path):
    """The notebook way: the cell defining b is fixed and re-run, then resume()."""
    url = "sqlite:///" + str(tmp_path / "resume.db")
    calls: list[str] = []

    @task(id="dur_resume_nb_a")
    def a(ctx):
        calls.append("a")
        ctx["token"] = f"t{time.monotonic_ns()}"

    @task(id="dur_resume_nb_b", dependencies=[a])
    def b(ctx):
        calls.append("b")
        raise ValueError("bug in b")

    @task(id="dur_resume_nb_c", dependencies=[b])
    def c(ctx):
        calls.append("c")
        ctx["c"] = ctx["b"].upper()

    wf = Workflow("dur_resume_nb", [a, b, c])
    with Runner(url, max_concurrency=2) as runner:
        first = runner.run(wf, {})
        assert first.status == "failed"
        assert calls == ["a", "b"]

        @task(id="dur_resume_nb_b", dependencies=[a])
        def b_fixed(ctx):
            calls.append("b-fixed")
            ctx["b"] = "fixed:" + ctx["token"]

        second = runner.resume(first.run_id).wait(timeout=30)
    assert second.status == "completed", second
    assert calls == ["a", "b", "b-fixed", "c"]
    token = first.context["token"]
    assert second.context == {"token": token, "b": "fixed:" + token, "c": f"FIXED:{token.upper()}"}
    history = second.tasks["dur_resume_nb_b"].history
    assert [(h.attempt, h.status) for h in history] == [(1, "failed"), (2, "completed")]
    assert history[0].error == "ValueError: bug in b"
    assert [h.status for h in second.tasks["dur_resume_nb_a"].history] == ["completed"]
    assert [e["kind"] for e in second.events].count("resumed") == 1
