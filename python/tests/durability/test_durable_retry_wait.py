"""SIGKILL while a retry waits: the retry keeps its persisted time across the restart."""

from __future__ import annotations

import time

from durable_helpers import events_of, integrity

DELAY = 2.0
SLACK_US = 1_500_000  # how late after its persisted time the retry may start


def kill_during_retry_wait(d):
    """Starts the run, kills the process once flaky's retry is scheduled; returns
    (run_id, ready_at_us, first attempt's finished_at_us), read from the crash snapshot."""
    flaky = f"{d.name}_flaky"
    with d.child("start", "retry", "--retry-delay", str(DELAY), "--hold", "60") as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        deadline = time.monotonic() + 20
        while True:
            rows = d.rows(
                "SELECT status, attempts, ready_at FROM run_tasks WHERE run_id = ? AND task_id = ?",
                run_id,
                flaky,
            )
            if rows and rows[0]["status"] == "ready" and rows[0]["attempts"] == 1:
                break
            assert time.monotonic() < deadline, f"no retry scheduled: {rows}\n{proc.describe()}"
            time.sleep(0.01)
        proc.sigkill()

    crash = d.snapshot()
    assert integrity(crash) == "ok"
    row = d.tasks(run_id, path=crash)[flaky]
    assert (row["status"], row["attempts"]) == ("ready", 1), row
    attempts = d.rows(
        "SELECT * FROM task_attempts WHERE run_id = ? AND task_id = ?", run_id, flaky, path=crash
    )
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, "failed")]
    ready_at, failed_at = row["ready_at"], attempts[0]["finished_at"]
    # The retry is scheduled DELAY s after the failure (no jitter).
    assert abs((ready_at - failed_at) - DELAY * 1e6) < 200_000, (ready_at, failed_at)
    return run_id, ready_at


def check_result(d, result, ready_at):
    flaky = f"{d.name}_flaky"
    assert result["status"] == "completed", result
    assert result["context"] == {"prepared": True, "flaky": "ok", "after": "ok!"}
    task = result["tasks"][flaky]
    assert task["attempts"] == 2, task
    history = task["history"]
    assert [(a["attempt"], a["status"]) for a in history] == [(1, "failed"), (2, "completed")]
    assert history[0]["error"] == "RuntimeError: first attempt fails", history
    assert history[1]["started_at"] >= ready_at, (
        f"the retry started {(ready_at - history[1]['started_at']) / 1e6:.3f} s before its "
        "persisted time"
    )
    assert d.executions() == {f"{d.name}_prep": 1, flaky: 2, f"{d.name}_after": 1}
    assert d.log_lines()[1:3] == [f"{flaky} fail", f"{flaky} ok"]
    assert events_of(result, "recovered"), result["events"]
    assert integrity(d.db_path) == "ok"
    return history[1]["started_at"]


def test_retry_scheduled_before_the_kill_runs_at_its_persisted_time(durable):
    d = durable("dur_retry_wait")
    run_id, ready_at = kill_during_retry_wait(d)

    with d.child("recover", "retry", "--retry-delay", str(DELAY), "--run-id", run_id) as proc:
        opened = proc.expect("runner_open")
        result = proc.expect("finished")
        assert proc.finish() == 0, proc.describe()

    # The new process took over well before the retry was due ...
    assert opened["after_us"] < ready_at - 500_000, (opened, ready_at)
    started = check_result(d, result, ready_at)
    # ... and the retry ran at the persisted time: not at once, not much later, not lost.
    assert started - ready_at < SLACK_US, f"retry started {(started - ready_at) / 1e6:.3f} s late"


def test_retry_overdue_at_restart_runs_at_once(durable):
    d = durable("dur_retry_overdue")
    run_id, ready_at = kill_during_retry_wait(d)
    while time.time_ns() // 1000 < ready_at + 300_000:
        time.sleep(0.05)

    with d.child("recover", "retry", "--retry-delay", str(DELAY), "--run-id", run_id) as proc:
        opened = proc.expect("runner_open")
        result = proc.expect("finished")
        assert proc.finish() == 0, proc.describe()

    assert opened["before_us"] > ready_at
    started = check_result(d, result, ready_at)
    assert started - opened["after_us"] < SLACK_US, "an overdue retry waited after recovery"
