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
    assert tasks[c]["status"] == "upstream_failed"


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


def test_resume_a_cancelled_run(tmp_path: Path):
    """Cancelled mid-way, then resumed: the cancelled tasks run, the completed do not."""
    url = "sqlite:///" + str(tmp_path / "cancelled.db")
    calls: list[str] = []

    @task(id="dur_resume_cancel_a")
    def a(ctx):
        calls.append("a")
        ctx["a"] = f"t{time.monotonic_ns()}"

    @task(id="dur_resume_cancel_b", dependencies=[a])
    def b(ctx):
        calls.append("b")
        time.sleep(0.4)
        ctx["b"] = ctx["a"] + "/b"

    @task(id="dur_resume_cancel_c", dependencies=[b])
    def c(ctx):
        calls.append("c")
        ctx["c"] = ctx["b"] + "/c"

    wf = Workflow("dur_resume_cancel", [a, b, c])
    with Runner(url, max_concurrency=2) as runner:
        handle = runner.start(wf, {})
        deadline = time.monotonic() + 20
        while "b" not in calls:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert runner.cancel(handle.run_id)
        first = handle.wait(timeout=30)
        assert first.status == "cancelled", first
        assert first.tasks["dur_resume_cancel_c"].status == "cancelled"

        second = runner.resume(handle.run_id).wait(timeout=30)
    assert second.status == "completed", second
    assert calls == ["a", "b", "b", "c"]
    token = first.context["a"]
    assert second.context == {"a": token, "b": token + "/b", "c": token + "/b/c"}
    assert [h.status for h in second.tasks["dur_resume_cancel_a"].history] == ["completed"]
    assert second.tasks["dur_resume_cancel_b"].history[-1].status == "completed"
    assert [e["kind"] for e in second.events].count("resumed") == 1, second.events


def test_resume_continues_an_interrupted_run_without_automatic_recovery(durable):
    """Runner(recover=False), then runner.resume(run_id) on a run whose process died."""
    d = durable("dur_resume_interrupted")
    ids = [f"{d.name}_s{i:02d}" for i in range(4)]
    opts = ("--n", "4", "--sleep", "0.15", "--input", '{"acc": []}')
    with d.child("start", "chain", *opts) as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        d.wait_marker(ids[2], proc)
        proc.sigkill()
    assert integrity(d.snapshot()) == "ok"

    result = d.run_child("resume", "chain", *opts, "--run-id", run_id)

    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    assert d.executions() == {**dict.fromkeys(ids, 1), ids[2]: 2}
    history = result["tasks"][ids[2]]["history"]
    assert [(h["attempt"], h["status"]) for h in history] == [(1, "failed"), (2, "completed")]
    assert history[0]["error"].startswith("interrupted")
    assert {"recovered", "resumed"} & {e["kind"] for e in result["events"]}, result["events"]
    assert integrity(d.db_path) == "ok"
