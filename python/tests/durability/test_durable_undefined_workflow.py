"""A run whose workflow is not defined in the recovering process is left alone."""

from __future__ import annotations

from durable_helpers import events_of, integrity

N = 5
SLEEP = 0.2
K = 2


def test_undefined_workflow_run_is_interrupted_until_a_defining_process_opens(durable):
    d = durable("dur_undef")
    ids = [f"{d.name}_s{i:02d}" for i in range(N)]
    opts = ("--n", str(N), "--sleep", str(SLEEP), "--input", '{"acc": []}')

    with d.child("start", "chain", *opts) as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        d.wait_marker(ids[K], proc)
        proc.sigkill()
    crash = d.snapshot()
    assert integrity(crash) == "ok"
    tasks_sql = "SELECT * FROM run_tasks WHERE run_id = ? ORDER BY task_id"
    attempts_sql = "SELECT * FROM task_attempts WHERE run_id = ? ORDER BY task_id, attempt"
    tasks_at_kill = d.rows(tasks_sql, run_id, path=crash)
    attempts_at_kill = d.rows(attempts_sql, run_id, path=crash)
    assert {r["task_id"]: r["status"] for r in tasks_at_kill}[ids[K]] == "running"
    log_at_kill = d.log_lines()

    # A process that defines only another workflow opens a Runner (recover=True) and
    # stays long enough for its periodic recovery to run too.
    other = f"{d.name}_other"
    with d.child("idle", "single", "--hold", "2.6", name=other) as proc:
        proc.expect("runner_open")
        idle = proc.expect("idle", timeout=30)
        assert proc.finish() == 0, proc.describe()
    assert idle["interrupted"] == [run_id]

    run = d.rows("SELECT status, owner FROM runs WHERE run_id = ?", run_id)[0]
    assert run["status"] == "interrupted", run
    # Untouched: no task ran, no task row or attempt changed.
    assert d.log_lines() == log_at_kill
    assert d.rows(tasks_sql, run_id) == tasks_at_kill
    assert d.rows(attempts_sql, run_id) == attempts_at_kill

    # A process that defines the workflow opens a Runner: the run continues.
    result = d.run_child("recover", "chain", *opts, "--run-id", run_id)
    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    executions = d.executions()
    assert executions == {**dict.fromkeys(ids, 1), ids[K]: 2}, executions
    interrupted = result["tasks"][ids[K]]["history"]
    assert [h["status"] for h in interrupted] == ["failed", "completed"]
    assert interrupted[0]["error"].startswith("interrupted")
    kinds = [e["kind"] for e in result["events"]]
    assert kinds.count("interrupted") == 1, kinds
    assert kinds.count("recovered") == 1, kinds
    assert kinds.index("interrupted") < kinds.index("recovered")
    assert events_of(result, "recovered")[0]["detail"]["interrupted_tasks"] == [ids[K]]
    assert integrity(d.db_path) == "ok"
