"""Task failures: what fails, what is skipped, what still runs, and what is recorded."""

from __future__ import annotations

import threading
import time

import cloacina
import pytest
from cloacina import Workflow, WorkflowFailed, task
from helpers import loads


def failing_workflow() -> Workflow:
    """root -> exploder -> downstream_1 -> downstream_2;  root -> good;  lone_1 -> lone_2.

    good and lone_1 wait until exploder is about to raise, so they are still running when
    it fails, and lone_2 only starts after the failure.
    """
    exploding = threading.Event()

    @task
    def root(ctx):
        ctx["root"] = 1

    @task(dependencies=[root])
    def exploder(ctx):
        ctx["partial"] = "written before the raise"
        exploding.set()
        raise ValueError("boom-42")

    @task(dependencies=[exploder])
    def downstream_1(ctx):
        ctx["downstream_1"] = 1

    @task(dependencies=[downstream_1])
    def downstream_2(ctx):
        ctx["downstream_2"] = 1

    @task(dependencies=[root])
    def good(ctx):
        exploding.wait(20)
        time.sleep(0.2)
        ctx["good"] = 1

    @task
    def lone_1(ctx):
        exploding.wait(20)
        time.sleep(0.2)
        ctx["lone_1"] = 1

    @task(dependencies=[lone_1])
    def lone_2(ctx):
        ctx["lone_2"] = 1

    tasks = [root, exploder, downstream_1, downstream_2, good, lone_1, lone_2]
    return Workflow("failing_wf", tasks)


def test_failure_blocks_downstream_and_finishes_other_branches(runner):
    result = runner.run(failing_workflow(), {"in": 0})
    assert result.status == "failed"
    statuses = {tid: t.status for tid, t in result.tasks.items()}
    assert statuses == {
        "root": "completed",
        "exploder": "failed",
        "downstream_1": "upstream_failed",
        "downstream_2": "upstream_failed",
        "good": "completed",
        "lone_1": "completed",
        "lone_2": "completed",
    }
    # The final context has the input and every completed task's writes, nothing else.
    assert result.context == {"in": 0, "root": 1, "good": 1, "lone_1": 1, "lone_2": 1}


def test_failed_task_result_has_error_and_traceback(runner):
    result = runner.run(failing_workflow(), {})
    exploder = result.tasks["exploder"]
    assert exploder.status == "failed"
    assert exploder.attempts == 1
    assert "boom-42" in exploder.error
    assert "Traceback" in exploder.traceback
    assert "ValueError" in exploder.traceback
    assert 'raise ValueError("boom-42")' in exploder.traceback
    assert exploder.started_at is not None and exploder.finished_at is not None

    skipped = result.tasks["downstream_1"]
    assert skipped.attempts == 0
    assert skipped.started_at is None


def test_run_error_names_the_failed_task(runner):
    result = runner.run(failing_workflow(), {})
    assert result.error is not None
    assert "exploder" in result.error


def test_raise_for_status(runner):
    result = runner.run(failing_workflow(), {})
    with pytest.raises(WorkflowFailed) as exc:
        result.raise_for_status()
    err = exc.value
    assert isinstance(err, cloacina.CloacinaError)
    assert err.task_id == "exploder"
    assert "boom-42" in err.error
    assert "Traceback" in err.traceback
    assert 'raise ValueError("boom-42")' in err.traceback


def test_failure_rows(runner, rows):
    result = runner.run(failing_workflow(), {})
    [run] = rows("SELECT * FROM runs WHERE run_id = ?", result.run_id)
    assert run["status"] == "failed"
    assert run["error"] is not None
    assert run["finished_at"] is not None

    tasks = {
        r["task_id"]: r
        for r in rows(
            "SELECT t.*, o.output FROM run_tasks t LEFT JOIN task_outputs o "
            "ON o.run_id = t.run_id AND o.task_id = t.task_id WHERE t.run_id = ?",
            result.run_id,
        )
    }
    assert tasks["exploder"]["status"] == "failed"
    assert tasks["exploder"]["output"] is None
    assert "boom-42" in tasks["exploder"]["error"]
    assert 'raise ValueError("boom-42")' in tasks["exploder"]["traceback"]
    for tid in ("downstream_1", "downstream_2"):
        assert tasks[tid]["status"] == "upstream_failed"
        assert tasks[tid]["output"] is None
        assert tasks[tid]["attempts"] == 0
    assert loads(tasks["good"]["output"]) == {"good": 1}

    attempts = rows(
        "SELECT task_id, attempt, status, error, traceback FROM task_attempts "
        "WHERE run_id = ? AND task_id IN ('exploder', 'downstream_1', 'downstream_2')",
        result.run_id,
    )
    assert len(attempts) == 1
    [attempt] = attempts
    assert (attempt["task_id"], attempt["attempt"], attempt["status"]) == ("exploder", 1, "failed")
    assert "boom-42" in attempt["error"]
    assert "Traceback" in attempt["traceback"]


def test_run_does_not_raise_and_runner_stays_usable(runner):
    failed = runner.run(failing_workflow(), {})
    assert failed.status == "failed"

    @task
    def fine(ctx):
        return "fine"

    ok = runner.run(Workflow("after_failure_wf", [fine]), {})
    assert ok.status == "completed"
    assert ok.raise_for_status() is ok


def test_join_of_a_failed_and_a_good_branch_is_skipped(runner):
    @task
    def fails_fast(ctx):
        raise RuntimeError("left side broke")

    @task
    def works(ctx):
        ctx["works"] = True

    @task(dependencies=[fails_fast, works])
    def joined(ctx):
        ctx["joined"] = True

    result = runner.run(Workflow("failed_join_wf", [fails_fast, works, joined]), {})
    assert result.status == "failed"
    assert result.tasks["works"].status == "completed"
    assert result.tasks["joined"].status == "upstream_failed"
    assert result.context == {"works": True}


def test_other_exception_types(runner):
    class CustomProblem(Exception):
        pass

    @task
    def key_error(ctx):
        return ctx["no_such_key_here"]

    @task
    def custom(ctx):
        raise CustomProblem("custom trouble")

    result = runner.run(Workflow("exception_types_wf", [key_error, custom]), {})
    assert result.status == "failed"
    assert result.tasks["key_error"].status == "failed"
    assert "no_such_key_here" in result.tasks["key_error"].error
    assert result.tasks["custom"].status == "failed"
    assert "custom trouble" in result.tasks["custom"].error
    assert "CustomProblem" in result.tasks["custom"].traceback


# --- values that are not JSON -------------------------------------------------------------


def _write_a_set(ctx):
    ctx["bad"] = {1, 2}


def _return_an_object(ctx):
    return {"k": object()}


def _write_a_nested_object(ctx):
    ctx["nested"] = {"inner": [1, object()]}


@pytest.mark.parametrize(
    ("body", "key"),
    [(_write_a_set, "bad"), (_return_an_object, "k"), (_write_a_nested_object, "nested")],
    ids=["write-set", "return-object", "write-nested-object"],
)
def test_non_json_value_fails_the_task_naming_task_and_key(runner, rows, body, key):
    @task
    def before(ctx):
        ctx["before"] = 1

    unserializable = task(id="unserializable", dependencies=[before])(body)

    @task(dependencies=[unserializable])
    def downstream(ctx):
        ctx["downstream"] = 1

    result = runner.run(Workflow("non_json_wf", [before, unserializable, downstream]), {})
    assert result.status == "failed"
    tr = result.tasks["unserializable"]
    assert tr.status == "failed"
    assert "unserializable" in tr.error
    assert key in tr.error
    assert result.tasks["downstream"].status == "upstream_failed"
    assert result.context == {"before": 1}

    [row] = rows(
        "SELECT t.status, o.output FROM run_tasks t "
        "LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_id = t.task_id "
        "WHERE t.run_id = ? AND t.task_id = 'unserializable'",
        result.run_id,
    )
    assert row == {"status": "failed", "output": None}


def test_non_json_return_value_names_the_task(runner):
    @task(id="returns_a_set")
    def returns_a_set(ctx):
        return {1, 2, 3}

    result = runner.run(Workflow("non_json_return_wf", [returns_a_set]), {})
    assert result.status == "failed"
    assert result.tasks["returns_a_set"].status == "failed"
    assert "returns_a_set" in result.tasks["returns_a_set"].error
