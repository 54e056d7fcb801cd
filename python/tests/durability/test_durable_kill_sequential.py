"""SIGKILL in the middle of a task of a sequential workflow, then recovery in a new process."""

from __future__ import annotations

import pytest
from durable_helpers import events_of, integrity

N = 10
SLEEP = 0.15


@pytest.mark.parametrize("k", [1, 4, 8])
def test_kill_mid_task_then_new_process_recovers(durable, k):
    d = durable(f"dur_seq_k{k}")
    ids = [f"{d.name}_s{i:02d}" for i in range(N)]
    opts = ("--n", str(N), "--sleep", str(SLEEP), "--input", '{"acc": [], "x": 7}')

    with d.child("start", "chain", *opts) as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        d.wait_marker(ids[k], proc)
        proc.sigkill()

    # The database as the kill left it: consistent, and exactly where the run was.
    crash = d.snapshot()
    assert integrity(crash) == "ok"
    run = d.rows("SELECT * FROM runs WHERE run_id = ?", run_id, path=crash)[0]
    assert run["status"] == "running", run
    at_kill = d.tasks(run_id, path=crash)
    assert [at_kill[t]["status"] for t in ids[:k]] == ["completed"] * k
    assert at_kill[ids[k]]["status"] == "running"
    assert all(at_kill[t]["status"] == "pending" for t in ids[k + 1 :]), at_kill
    assert d.executions() == {t: 1 for t in ids[: k + 1]}

    # A new process defines the same workflow and opens a Runner: nothing else.
    result = d.run_child("recover", "chain", *opts, "--run-id", run_id)

    assert result["status"] == "completed", result
    assert result["context"] == {"x": 7, "acc": ids}
    executions = d.executions()
    for t in ids[:k]:
        assert executions[t] == 1, f"{t} completed before the kill but ran again: {executions}"
    assert executions[ids[k]] == 2, f"the interrupted task must run again once: {executions}"
    for t in ids[k + 1 :]:
        assert executions[t] == 1, executions
    # The log shows the order: the interrupted task's re-execution comes right after it.
    assert d.log_lines() == [*ids[: k + 1], *ids[k:]]

    tasks = result["tasks"]
    for t in ids[:k]:
        assert tasks[t]["attempts"] == 1
        assert [a["status"] for a in tasks[t]["history"]] == ["completed"]
    interrupted = tasks[ids[k]]
    assert interrupted["status"] == "completed"
    assert interrupted["attempts"] == 2
    assert [(a["attempt"], a["status"]) for a in interrupted["history"]] == [
        (1, "failed"),
        (2, "completed"),
    ]
    assert interrupted["history"][0]["error"].startswith("interrupted"), interrupted
    recovered = events_of(result, "recovered")
    assert len(recovered) == 1, result["events"]
    assert recovered[0]["detail"]["interrupted_tasks"] == [ids[k]], recovered
    assert not events_of(result, "version_mismatch"), result["events"]
    assert integrity(d.db_path) == "ok"


def start_and_kill_at(d, mode: str, opts: tuple, task_id: str, run_id: str | None = None) -> str:
    """Runs `mode` (start or recover) in a child, SIGKILLs it once task_id (re)started."""
    d.marker(task_id).unlink(missing_ok=True)
    extra = ("--run-id", run_id) if run_id else ()
    with d.child(mode, "chain", *opts, *extra) as proc:
        proc.expect("runner_open")
        if mode == "start":
            run_id = proc.expect("started")["run_id"]
        d.wait_marker(task_id, proc)
        proc.sigkill()
    assert integrity(d.snapshot()) == "ok"
    assert run_id is not None
    return run_id


def test_kill_during_recovery_then_recover_again(durable):
    """The recovering process dies too (in a later task); a third process finishes."""
    d = durable("dur_seq_twice")
    ids = [f"{d.name}_s{i:02d}" for i in range(6)]
    opts = ("--n", "6", "--sleep", str(SLEEP), "--input", '{"acc": []}')
    run_id = start_and_kill_at(d, "start", opts, ids[1])
    start_and_kill_at(d, "recover", opts, ids[3], run_id)

    result = d.run_child("recover", "chain", *opts, "--run-id", run_id)

    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    assert d.executions() == {**dict.fromkeys(ids, 1), ids[1]: 2, ids[3]: 2}
    for t in (ids[1], ids[3]):
        history = result["tasks"][t]["history"]
        assert [(h["attempt"], h["status"]) for h in history] == [(1, "failed"), (2, "completed")]
        assert history[0]["error"].startswith("interrupted")
    recovered = events_of(result, "recovered")
    assert [e["detail"]["interrupted_tasks"] for e in recovered] == [[ids[1]], [ids[3]]]
    assert integrity(d.db_path) == "ok"


def test_task_interrupted_twice_runs_a_third_time(durable):
    """Killed in s02, and killed again while the recovering process re-runs s02."""
    d = durable("dur_seq_same_twice")
    ids = [f"{d.name}_s{i:02d}" for i in range(4)]
    opts = ("--n", "4", "--sleep", str(SLEEP), "--input", '{"acc": []}')
    run_id = start_and_kill_at(d, "start", opts, ids[2])
    start_and_kill_at(d, "recover", opts, ids[2], run_id)

    result = d.run_child("recover", "chain", *opts, "--run-id", run_id)

    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    assert d.executions() == {**dict.fromkeys(ids, 1), ids[2]: 3}
    history = result["tasks"][ids[2]]["history"]
    assert [(h["attempt"], h["status"]) for h in history] == [
        (1, "failed"),
        (2, "failed"),
        (3, "completed"),
    ]
    assert all(h["error"].startswith("interrupted") for h in history[:2]), history
    assert len(events_of(result, "recovered")) == 2, result["events"]
