"""Hooks: on_success, on_failure and on_retry, when they are called and what they see."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime, timezone

from cloacina import Context, Fail, Retry, Workflow, rules, task
from helpers import eventually, loads


class Recorder:
    """Collects hook calls from whatever thread the engine calls them on."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.threads: list[int] = []
        self.lock = threading.Lock()

    def add(self, *call) -> None:
        with self.lock:
            self.calls.append(call)
            self.threads.append(threading.get_ident())

    def of(self, kind: str) -> list[tuple]:
        with self.lock:
            return [c[1:] for c in self.calls if c[0] == kind]

    def wait_for(self, kind: str, n: int, timeout: float = 5.0) -> list[tuple]:
        return eventually(lambda: self.of(kind), lambda calls: len(calls) >= n, timeout=timeout)

    def hooks(self) -> dict:
        def on_success(task_id, ctx):
            self.add("success", task_id, ctx)

        def on_failure(task_id, error, ctx):
            self.add("failure", task_id, error, ctx)

        def on_retry(task_id, error, attempt):
            self.add("retry", task_id, error, attempt)

        return {"on_success": on_success, "on_failure": on_failure, "on_retry": on_retry}


def settle() -> None:
    """Gives hooks that should not be called a chance to show up anyway."""
    time.sleep(0.3)


def test_on_success_after_the_final_success(runner):
    rec = Recorder()

    @task(id="produce")
    def produce(ctx):
        return {"base": 10}

    @task(id="hooked", dependencies=[produce], **rec.hooks())
    def hooked(ctx):
        ctx["written"] = ctx["base"] + 1
        return {"returned": "yes"}

    result = runner.run(Workflow("on_success_wf", [hooked]), {"in": 1})
    assert result.status == "completed"
    [(task_id, ctx)] = rec.wait_for("success", 1)
    assert task_id == "hooked"
    assert isinstance(ctx, Context)
    # The task's input plus its writes.
    assert ctx.to_dict() == {"in": 1, "base": 10, "written": 11, "returned": "yes"}
    # On a worker thread, not the caller's.
    assert rec.threads[0] != threading.get_ident()
    settle()
    assert rec.of("success") == [(task_id, ctx)]
    assert rec.of("failure") == []
    assert rec.of("retry") == []


def test_hooks_during_retries_then_success(runner):
    rec = Recorder()
    calls = []

    @task(id="flaky_hooked", retries=3, retry_delay=0.05, **rec.hooks())
    def flaky_hooked(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise ValueError(f"f{len(calls)}")
        return {"ok": True}

    result = runner.run(Workflow("retry_hooks_wf", [flaky_hooked]), {"in": 0})
    assert result.tasks["flaky_hooked"].attempts == 3
    retries = rec.wait_for("retry", 2)
    [(task_id, ctx)] = rec.wait_for("success", 1)
    assert retries == [
        ("flaky_hooked", "ValueError: f1", 1),
        ("flaky_hooked", "ValueError: f2", 2),
    ]
    assert task_id == "flaky_hooked"
    assert ctx.to_dict() == {"in": 0, "ok": True}
    settle()
    assert len(rec.of("retry")) == 2
    assert len(rec.of("success")) == 1
    assert rec.of("failure") == []


def test_on_failure_once_after_the_final_failure(runner):
    rec = Recorder()
    calls = []

    @task(id="before_doomed")
    def before_doomed(ctx):
        return {"upstream": "value"}

    @task(
        id="doomed_hooked",
        dependencies=[before_doomed],
        retries=2,
        retry_delay=0.05,
        **rec.hooks(),
    )
    def doomed_hooked(ctx):
        calls.append(1)
        ctx["partial"] = 1
        raise RuntimeError(f"failure {len(calls)}")

    result = runner.run(Workflow("on_failure_wf", [doomed_hooked]), {"in": 1})
    t = result.tasks["doomed_hooked"]
    assert t.status == "failed"
    assert t.attempts == 3
    [(task_id, error, ctx)] = rec.wait_for("failure", 1)
    assert task_id == "doomed_hooked"
    assert error == t.error == "RuntimeError: failure 3"
    assert isinstance(ctx, Context)
    # The task's input (a failed attempt's writes are not part of it).
    assert ctx.to_dict() == {"in": 1, "upstream": "value"}
    retries = rec.wait_for("retry", 2)
    assert retries == [
        ("doomed_hooked", "RuntimeError: failure 1", 1),
        ("doomed_hooked", "RuntimeError: failure 2", 2),
    ]
    settle()
    assert len(rec.of("failure")) == 1
    assert len(rec.of("retry")) == 2
    assert rec.of("success") == []


def test_on_failure_without_retries_and_for_fail(runner):
    rec = Recorder()

    @task(id="plain_fail", **rec.hooks())
    def plain_fail(ctx):
        raise KeyError("k")

    @task(id="fail_fast", retries=5, retry_delay=0.05, **rec.hooks())
    def fail_fast(ctx):
        raise Fail("stop here")

    result = runner.run(Workflow("fail_hooks_wf", [plain_fail, fail_fast]), {})
    assert result.status == "failed"
    failures = sorted(rec.wait_for("failure", 2), key=lambda c: c[0])
    assert [(c[0], c[1]) for c in failures] == [
        ("fail_fast", "Fail: stop here"),
        ("plain_fail", "KeyError: 'k'"),
    ]
    settle()
    assert rec.of("retry") == []
    assert len(rec.of("failure")) == 2


def test_on_failure_when_retry_on_does_not_match(runner):
    rec = Recorder()

    @task(id="unlisted", retries=3, retry_delay=0.05, retry_on=(KeyError,), **rec.hooks())
    def unlisted(ctx):
        raise ValueError("not listed")

    runner.run(Workflow("unlisted_hooks_wf", [unlisted]), {})
    [(task_id, error, _ctx)] = rec.wait_for("failure", 1)
    assert task_id == "unlisted"
    assert error == "ValueError: not listed"
    settle()
    assert rec.of("retry") == []


def test_hooks_for_timeouts(runner):
    rec = Recorder()

    @task(id="slow_hooked", timeout=0.15, retries=1, retry_delay=0.05, **rec.hooks())
    async def slow_hooked(ctx):
        await asyncio.sleep(5)

    result = runner.run(Workflow("timeout_hooks_wf", [slow_hooked]), {})
    assert result.tasks["slow_hooked"].attempts == 2
    [(task_id, error, attempt)] = rec.wait_for("retry", 1)
    assert (task_id, attempt) == ("slow_hooked", 1)
    assert error.startswith("TaskTimeout")
    [(task_id, error, _ctx)] = rec.wait_for("failure", 1)
    assert error.startswith("TaskTimeout")
    assert error == result.tasks["slow_hooked"].error


def test_hooks_of_an_async_task(runner):
    rec = Recorder()

    @task(id="async_hooked", retries=1, retry_delay=0.05, **rec.hooks())
    async def async_hooked(ctx):
        if not ctx.get("second"):
            raise ConnectionError("once")
        return {"async": True}

    runner.run(Workflow("async_hooks_wf", [async_hooked]), {"second": False})
    assert rec.wait_for("retry", 1) == [("async_hooked", "ConnectionError: once", 1)]
    [(_tid, _err, ctx)] = rec.wait_for("failure", 1)
    assert ctx.to_dict() == {"second": False}

    runner.run(Workflow("async_hooks_wf", [async_hooked]), {"second": True})
    [(task_id, ctx)] = rec.wait_for("success", 1)
    assert task_id == "async_hooked"
    assert ctx.to_dict() == {"second": True, "async": True}


def test_hooks_run_after_the_transition_is_committed(runner, rows):
    seen: dict[str, list] = {"success": [], "retry": [], "failure": []}

    def task_row(task_id):
        return rows(
            "SELECT t.status, t.attempts, o.output, t.error FROM run_tasks t "
            "LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_id = t.task_id "
            "WHERE t.task_id = ?",
            task_id,
        )

    def attempt_rows(task_id):
        return rows(
            "SELECT attempt, status, error FROM task_attempts WHERE task_id = ? ORDER BY attempt",
            task_id,
        )

    def on_success(task_id, ctx):
        seen["success"].append(task_row(task_id))

    def on_retry(task_id, error, attempt):
        seen["retry"].append((attempt, attempt_rows(task_id)))

    def on_failure(task_id, error, ctx):
        seen["failure"].append((task_row(task_id), attempt_rows(task_id)))

    calls = []

    @task(id="committed_ok", retries=1, retry_delay=0.05, on_success=on_success, on_retry=on_retry)
    def committed_ok(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first try")
        return {"v": 1}

    @task(id="committed_bad", on_failure=on_failure)
    def committed_bad(ctx):
        raise ValueError("always")

    result = runner.run(Workflow("committed_wf", [committed_ok, committed_bad]), {})
    assert result.status == "failed"
    eventually(lambda: [len(v) for v in seen.values()], lambda lens: lens == [1, 1, 1], timeout=5)
    [[ok_row]] = seen["success"]
    assert ok_row["status"] == "completed"
    assert ok_row["attempts"] == 2
    assert loads(ok_row["output"]) == {"v": 1}
    [(attempt, rows_then)] = seen["retry"]
    assert attempt == 1
    assert [(r["attempt"], r["status"]) for r in rows_then] == [(1, "failed")]
    [([bad_row], bad_attempts)] = seen["failure"]
    assert bad_row["status"] == "failed"
    assert bad_row["error"] == "ValueError: always"
    assert [(r["attempt"], r["status"]) for r in bad_attempts] == [(1, "failed")]


def test_raising_on_success_is_recorded_and_changes_nothing(runner, rows, caplog):
    caplog.set_level(logging.WARNING, logger="cloacina")

    def bad_hook(task_id, ctx):
        raise RuntimeError("hook exploded")

    @task(id="good_task", on_success=bad_hook)
    def good_task(ctx):
        return {"good": True}

    @task(id="after_good", dependencies=[good_task])
    def after_good(ctx):
        return {"after": True}

    result = runner.run(Workflow("bad_success_hook_wf", [after_good]), {})
    assert result.status == "completed"
    assert result.context == {"good": True, "after": True}

    def fetch():
        return runner.get_run(result.run_id).tasks["good_task"]

    t = eventually(fetch, lambda t: t.hook_errors, timeout=5)
    assert t.status == "completed"
    assert t.error is None
    [entry] = t.hook_errors
    assert entry["hook"] == "on_success"
    assert entry["attempt"] == 1
    assert "RuntimeError" in entry["error"]
    assert "hook exploded" in entry["error"]
    assert runner.get_run(result.run_id).status == "completed"
    assert runner.get_run(result.run_id).tasks["after_good"].hook_errors == []

    [row] = rows(
        "SELECT status, hook_errors FROM run_tasks WHERE run_id = ? AND task_id = 'good_task'",
        result.run_id,
    )
    assert row["status"] == "completed"
    assert loads(row["hook_errors"]) == t.hook_errors

    # And it was logged under the cloacina logger.
    eventually(
        lambda: [
            r
            for r in caplog.records
            if r.name.startswith("cloacina") and "hook exploded" in r.getMessage()
        ],
        bool,
        timeout=5,
    )


def test_raising_on_retry_does_not_stop_the_retries(runner):
    calls = []

    def bad_retry_hook(task_id, error, attempt):
        raise ValueError(f"retry hook broke on {attempt}")

    @task(id="retry_hook_task", retries=3, retry_delay=0.05, on_retry=bad_retry_hook)
    def retry_hook_task(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise OSError("again")
        return {"done": len(calls)}

    result = runner.run(Workflow("bad_retry_hook_wf", [retry_hook_task]), {})
    assert result.status == "completed"
    assert result.tasks["retry_hook_task"].attempts == 3
    t = eventually(
        lambda: runner.get_run(result.run_id).tasks["retry_hook_task"],
        lambda t: len(t.hook_errors) >= 2,
    )
    entries = sorted(t.hook_errors, key=lambda e: e["attempt"])
    assert [(e["hook"], e["attempt"]) for e in entries] == [("on_retry", 1), ("on_retry", 2)]
    assert "retry hook broke on 1" in entries[0]["error"]
    assert "retry hook broke on 2" in entries[1]["error"]
    assert t.status == "completed"


def test_raising_on_failure_keeps_the_failure(runner):
    def bad_failure_hook(task_id, error, ctx):
        raise LookupError("failure hook broke")

    @task(id="failing_hooked", retries=1, retry_delay=0.05, on_failure=bad_failure_hook)
    def failing_hooked(ctx):
        raise ValueError("the real error")

    result = runner.run(Workflow("bad_failure_hook_wf", [failing_hooked]), {})
    assert result.status == "failed"
    t = eventually(
        lambda: runner.get_run(result.run_id).tasks["failing_hooked"],
        lambda t: t.hook_errors,
    )
    assert t.status == "failed"
    assert t.error == "ValueError: the real error"
    assert t.attempts == 2
    [entry] = t.hook_errors
    assert entry["hook"] == "on_failure"
    assert entry["attempt"] == 2
    assert "failure hook broke" in entry["error"]
    again = runner.get_run(result.run_id)
    assert again.status == "failed"
    assert "the real error" in again.error


def test_hooks_not_called_for_skipped_or_cancelled_tasks(runner):
    rec = Recorder()

    @task(id="skip_source")
    def skip_source(ctx):
        raise Fail("upstream")

    @task(id="skipped_hooked", dependencies=[skip_source], **rec.hooks())
    def skipped_hooked(ctx):
        return None

    @task(id="gated_hooked", trigger=rules.context_value("go", "==", True), **rec.hooks())
    def gated_hooked(ctx):
        return None

    result = runner.run(Workflow("skip_hooks_wf", [skipped_hooked, gated_hooked]), {})
    assert result.tasks["skipped_hooked"].status == "upstream_failed"
    assert result.tasks["gated_hooked"].status == "skipped"
    settle()
    assert rec.calls == []


def test_slow_hook_does_not_hold_up_the_run(runner):
    hook_ended: list[datetime] = []

    def slow_hook(task_id, ctx):
        time.sleep(0.8)
        hook_ended.append(datetime.now(timezone.utc))

    @task(id="slow_hook_task", on_success=slow_hook)
    def slow_hook_task(ctx):
        return {"a": 1}

    @task(id="after_slow_hook", dependencies=[slow_hook_task])
    def after_slow_hook(ctx):
        return {"b": 1}

    result = runner.run(Workflow("slow_hook_wf", [after_slow_hook]), {})
    assert result.status == "completed"
    [ended] = eventually(lambda: list(hook_ended), bool, timeout=5)
    # The downstream task ran while the hook was still going.
    assert result.tasks["after_slow_hook"].started_at < ended


def test_lambda_hooks(runner):
    got = []

    @task(
        id="lambda_hooked",
        on_success=lambda task_id, ctx: got.append((task_id, ctx["x"])),
    )
    def lambda_hooked(ctx):
        return {"x": 7}

    runner.run(Workflow("lambda_hooks_wf", [lambda_hooked]), {})
    assert eventually(lambda: list(got), bool) == [("lambda_hooked", 7)]


def test_hook_errors_empty_without_hooks(runner):
    @task(id="no_hooks")
    def no_hooks(ctx):
        return None

    result = runner.run(Workflow("no_hooks_wf", [no_hooks]), {})
    assert result.tasks["no_hooks"].hook_errors == []


def test_hook_error_names_the_final_attempt(runner):
    calls = []

    def exploding_success(task_id, ctx):
        raise RuntimeError("late explosion")

    @task(id="second_time_lucky", retries=1, retry_delay=0.05, on_success=exploding_success)
    def second_time_lucky(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("unlucky")

    result = runner.run(Workflow("second_time_wf", [second_time_lucky]), {})
    t = eventually(
        lambda: runner.get_run(result.run_id).tasks["second_time_lucky"],
        lambda t: t.hook_errors,
    )
    assert t.status == "completed"
    assert [(e["hook"], e["attempt"]) for e in t.hook_errors] == [("on_success", 2)]


def test_hooks_after_a_timed_out_sync_task_see_no_stray_timeout(db_url):
    """Hooks run on the same worker threads as sync tasks: a TaskTimeout aimed at a
    timed-out task must not hit a hook its thread runs later."""
    from cloacina import Runner

    done = []

    def on_success(task_id, ctx):
        for _ in range(3):
            time.sleep(0.002)
        done.append(task_id)

    @task(id="hook_timeout_victim", timeout=0.1)
    def hook_timeout_victim(ctx):
        time.sleep(0.4)  # blocked in C past the timeout

    def hooked(i):
        @task(id=f"hooked_{i}", on_success=on_success)
        def body(ctx):
            time.sleep(0.01)

        return body

    tasks = [hook_timeout_victim] + [hooked(i) for i in range(40)]
    with Runner(db_url, max_concurrency=1) as one_slot:
        result = one_slot.run(Workflow("hook_leak_wf", tasks), {})
        eventually(lambda: len(done), lambda n: n == 40, timeout=10)
        time.sleep(0.2)
        again = one_slot.get_run(result.run_id)
    assert again.tasks["hook_timeout_victim"].error.startswith("TaskTimeout")
    errors = {tid: t.hook_errors for tid, t in again.tasks.items() if t.hook_errors}
    assert errors == {}
    assert all(again.tasks[f"hooked_{i}"].status == "completed" for i in range(40))


def test_hooks_for_retry_requests(runner):
    rec = Recorder()
    calls = []

    @task(id="requests_retry", retries=1, **rec.hooks())
    def requests_retry(ctx):
        calls.append(1)
        raise Retry("not ready", delay=0.05)

    result = runner.run(Workflow("retry_request_hooks_wf", [requests_retry]), {})
    t = result.tasks["requests_retry"]
    assert t.attempts == 2
    [(task_id, error, attempt)] = rec.wait_for("retry", 1)
    assert (task_id, attempt) == ("requests_retry", 1)
    assert error.startswith("Retry") and "not ready" in error
    [(task_id, error, _ctx)] = rec.wait_for("failure", 1)
    assert error == t.error
    assert "no retries are left" in error
    settle()
    assert len(rec.of("retry")) == 1
