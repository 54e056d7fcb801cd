"""Recovery by a process whose definition of the workflow differs from the run's."""

from __future__ import annotations

from durable_helpers import events_of, integrity

SLEEP = ("--sleep", "0.4")


def kill_during_b(d) -> tuple[str, str]:
    """Starts a v1 run (a -> b -> c), kills the process while b runs."""
    with d.child("start", "versioned", "--variant", "v1", *SLEEP) as proc:
        proc.expect("runner_open")
        started = proc.expect("started")
        d.wait_marker(f"{d.name}_b", proc)
        proc.sigkill()
    crash = d.snapshot()
    assert integrity(crash) == "ok"
    statuses = {t: r["status"] for t, r in d.tasks(started["run_id"], path=crash).items()}
    assert statuses == {
        f"{d.name}_a": "completed",
        f"{d.name}_b": "running",
        f"{d.name}_c": "pending",
    }
    return started["run_id"], started["version"]


def test_changed_task_code_same_ids_continues_with_a_version_mismatch_event(durable):
    d = durable("dur_version_code")
    a, b, c = (f"{d.name}_{x}" for x in "abc")
    run_id, v1 = kill_during_b(d)

    result = d.run_child("recover", "versioned", "--variant", "v2", *SLEEP, "--run-id", run_id)

    assert result["status"] == "completed", result
    # c ran with its new code; a's output from before the kill is kept.
    assert result["context"] == {"a": 1, "b": 2, "c": "v2:2"}
    assert d.executions() == {a: 1, b: 2, c: 1}
    mismatch = events_of(result, "version_mismatch")
    assert len(mismatch) == 1, result["events"]
    assert len(events_of(result, "recovered")) == 1, result["events"]
    assert [h["status"] for h in result["tasks"][b]["history"]] == ["failed", "completed"]
    detail = str(mismatch[0]["detail"])
    assert v1 in detail, mismatch  # the event says which version the run started with
    assert integrity(d.db_path) == "ok"


def test_recovery_replans_a_run_on_the_current_definition(durable):
    d = durable("dur_version_gone")
    a, b, c, dd = (f"{d.name}_{x}" for x in "abcd")
    run_id, v1 = kill_during_b(d)

    # v3 defines a -> b -> d: c, still to run, is gone; d is new.
    result = d.run_child("recover", "versioned", "--variant", "v3", *SLEEP, "--run-id", run_id)

    assert result["status"] == "completed", result
    tasks = result["tasks"]
    assert tasks[a]["status"] == "completed" and tasks[a]["attempts"] == 1
    assert tasks[b]["status"] == "completed"
    assert tasks[c]["status"] == "skipped"
    assert "no longer in workflow" in tasks[c]["reason"], tasks[c]
    assert tasks[dd]["status"] == "completed"
    assert result["context"]["d"] == "v3"
    assert result["version"] != v1  # the run now follows the current definition
    mismatch = events_of(result, "version_mismatch")
    assert len(mismatch) == 1, result["events"]
    assert mismatch[0]["detail"]["removed_tasks"] == [c]
    assert mismatch[0]["detail"]["added_tasks"] == [dd]
    assert mismatch[0]["detail"]["from"] == v1
    executions = d.executions()
    assert executions[a] == 1, executions  # the completed task never runs again
    assert c not in executions and executions[dd] == 1, executions
    assert integrity(d.db_path) == "ok"
