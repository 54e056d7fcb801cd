"""Retries: budgets, backoff shapes, jitter, retry_on, Retry and Fail, and what is recorded."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import timedelta

import pytest
from cloacina import Fail, Retry, Workflow, task
from helpers import eventually, micros_to_datetime

# Scheduling overhead allowed on top of a computed delay (debug build, busy CI machine).
SLACK = 0.6


def gaps(history) -> list[float]:
    """Seconds between the end of each attempt and the start of the next one."""
    return [(b.started_at - a.finished_at).total_seconds() for a, b in itertools.pairwise(history)]


def assert_gaps(history, expected: list[float]) -> list[float]:
    """Each wait is at least 90 % of the computed delay and at most the delay plus SLACK."""
    observed = gaps(history)
    assert len(observed) == len(expected), (observed, expected)
    for n, (got, want) in enumerate(zip(observed, expected, strict=True), start=1):
        assert got >= want * 0.9, f"wait after attempt {n}: {got:.3f} s < {want} s ({observed})"
        assert got < want + SLACK, f"wait after attempt {n}: {got:.3f} s >> {want} s ({observed})"
    return observed


def always_failing(task_id: str, **options):
    calls: list[int] = []

    @task(id=task_id, **options)
    def body(ctx):
        calls.append(1)
        raise ValueError(f"failure {len(calls)}")

    return body, calls


def test_succeeds_after_transient_failures(runner):
    calls = []

    @task(id="flaky", retries=3, retry_delay=0.05)
    def flaky(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"flaky network {len(calls)}")
        return {"value": ctx["x"] * 2}

    result = runner.run(Workflow("flaky_wf", [flaky]), {"x": 21})
    assert result.status == "completed", result.tasks["flaky"].error
    t = result.tasks["flaky"]
    assert t.status == "completed"
    assert t.attempts == 3
    assert len(calls) == 3
    assert t.error is None
    assert result.context == {"x": 21, "value": 42}
    assert [a.attempt for a in t.history] == [1, 2, 3]
    assert [a.status for a in t.history] == ["failed", "failed", "completed"]
    assert t.history[0].error == "ConnectionError: flaky network 1"
    assert t.history[1].error == "ConnectionError: flaky network 2"
    assert t.history[2].error is None
    assert t.history[2].traceback is None
    for a in t.history[:2]:
        assert "Traceback" in a.traceback
        assert "ConnectionError" in a.traceback


def test_retries_exhausted_fails_after_retries_plus_one_attempts(runner):
    body, calls = always_failing("doomed", retries=2, retry_delay=0.05)

    result = runner.run(Workflow("doomed_wf", [body]), {})
    assert result.status == "failed"
    t = result.tasks["doomed"]
    assert t.status == "failed"
    assert t.attempts == 3
    assert len(calls) == 3
    assert [a.status for a in t.history] == ["failed"] * 3
    assert [a.error for a in t.history] == [f"ValueError: failure {n}" for n in (1, 2, 3)]
    # The task's error is the last attempt's.
    assert t.error == "ValueError: failure 3"
    assert "doomed" in result.error


def test_no_retries_by_default(runner):
    body, calls = always_failing("once")

    result = runner.run(Workflow("once_wf", [body]), {})
    assert result.tasks["once"].status == "failed"
    assert result.tasks["once"].attempts == 1
    assert len(calls) == 1


def test_fixed_backoff(runner):
    body, _ = always_failing("fixed_t", retries=3, retry_delay=0.15, backoff="fixed")

    t = runner.run(Workflow("fixed_wf", [body]), {}).tasks["fixed_t"]
    assert t.attempts == 4
    observed = assert_gaps(t.history, [0.15, 0.15, 0.15])
    # Fixed: the waits do not grow (linear would make the last one 0.45 s).
    assert observed[-1] < 0.4, observed


def test_linear_backoff(runner):
    body, _ = always_failing("linear_t", retries=3, retry_delay=0.1, backoff="linear")

    t = runner.run(Workflow("linear_wf", [body]), {}).tasks["linear_t"]
    assert t.attempts == 4
    assert_gaps(t.history, [0.1, 0.2, 0.3])


def test_exponential_backoff(runner):
    body, _ = always_failing("exp_t", retries=4, retry_delay=0.05, backoff="exponential")

    t = runner.run(Workflow("exp_wf", [body]), {}).tasks["exp_t"]
    assert t.attempts == 5
    assert_gaps(t.history, [0.05, 0.1, 0.2, 0.4])


def test_max_retry_delay_caps_the_backoff(runner):
    body, _ = always_failing(
        "capped_t", retries=5, retry_delay=0.05, backoff="exponential", max_retry_delay=0.12
    )

    t = runner.run(Workflow("capped_wf", [body]), {}).tasks["capped_t"]
    assert t.attempts == 6
    observed = assert_gaps(t.history, [0.05, 0.1, 0.12, 0.12, 0.12])
    # Uncapped, the last two waits would be 0.4 s and 0.8 s.
    assert observed[-1] < 0.55, observed
    total = (t.history[-1].started_at - t.history[0].finished_at).total_seconds()
    assert total < 0.51 + 1.5, total


def test_max_retry_delay_caps_linear_backoff(runner):
    body, _ = always_failing(
        "capped_lin", retries=3, retry_delay=0.1, backoff="linear", max_retry_delay=0.15
    )

    t = runner.run(Workflow("capped_lin_wf", [body]), {}).tasks["capped_lin"]
    assert_gaps(t.history, [0.1, 0.15, 0.15])


def test_jitter_spreads_the_delay_within_it(runner):
    body, _ = always_failing("jitter_t", retries=6, retry_delay=0.2, jitter=True)

    t = runner.run(Workflow("jitter_wf", [body]), {}).tasks["jitter_t"]
    assert t.attempts == 7
    observed = gaps(t.history)
    assert len(observed) == 6
    assert all(g >= 0 for g in observed), observed
    # Never more than the delay itself (plus scheduling overhead) ...
    assert max(observed) < 0.2 + SLACK, observed
    # ... and random within it: six waits all in the top 10 % has odds of 1e-6.
    assert min(observed) < 0.18, observed


def test_retry_delay_zero_retries_at_once(runner):
    body, calls = always_failing("zero_delay", retries=3, retry_delay=0)

    t = runner.run(Workflow("zero_delay_wf", [body]), {}).tasks["zero_delay"]
    assert t.attempts == 4
    assert len(calls) == 4
    assert max(gaps(t.history)) < SLACK


def test_retry_on_other_type_fails_at_once(runner):
    calls = []

    @task(id="picky", retries=3, retry_delay=0.05, retry_on=(KeyError,))
    def picky(ctx):
        calls.append(1)
        raise ValueError("not a key error")

    result = runner.run(Workflow("picky_wf", [picky]), {})
    t = result.tasks["picky"]
    assert t.status == "failed"
    assert t.attempts == 1
    assert len(calls) == 1
    assert t.error == "ValueError: not a key error"
    assert len(t.history) == 1


def test_retry_on_matching_type_is_retried(runner):
    calls = []

    @task(id="picky_ok", retries=2, retry_delay=0.05, retry_on=(KeyError,))
    def picky_ok(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("missing")
        return {"done": True}

    t = runner.run(Workflow("picky_ok_wf", [picky_ok]), {}).tasks["picky_ok"]
    assert t.status == "completed"
    assert t.attempts == 3


def test_retry_on_matches_subclasses_and_a_single_type(runner):
    calls = []

    # A bare type (not a tuple); KeyError subclasses LookupError.
    @task(id="lookup", retries=2, retry_delay=0.05, retry_on=LookupError)
    def lookup(ctx):
        calls.append(1)
        raise KeyError(f"k{len(calls)}")

    t = runner.run(Workflow("lookup_wf", [lookup]), {}).tasks["lookup"]
    assert t.status == "failed"
    assert t.attempts == 3
    assert t.error == "KeyError: 'k3'"


def test_retry_on_stops_mid_way_on_an_unlisted_error(runner):
    calls = []

    @task(id="switcher", retries=5, retry_delay=0.05, retry_on=(ConnectionError,))
    def switcher(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("transient")
        raise TypeError("a bug, not worth retrying")

    t = runner.run(Workflow("switcher_wf", [switcher]), {}).tasks["switcher"]
    assert t.status == "failed"
    assert t.attempts == 3
    assert [a.error.split(":")[0] for a in t.history] == [
        "ConnectionError",
        "ConnectionError",
        "TypeError",
    ]


def test_async_task_is_retried(runner):
    calls = []

    @task(id="async_flaky", retries=2, retry_delay=0.05)
    async def async_flaky(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError(f"async failure {len(calls)}")
        return {"async_ok": len(calls)}

    result = runner.run(Workflow("async_flaky_wf", [async_flaky]), {})
    t = result.tasks["async_flaky"]
    assert t.status == "completed", t.error
    assert t.attempts == 3
    assert result.context["async_ok"] == 3
    assert t.history[0].error == "RuntimeError: async failure 1"


def test_writes_of_a_failed_attempt_are_dropped(runner):
    calls = []
    seen = []

    @task(id="partial", retries=1, retry_delay=0.05)
    def partial(ctx):
        calls.append(1)
        seen.append(sorted(ctx.keys()))
        if len(calls) == 1:
            ctx["half_done"] = True
            raise ValueError("failed after a write")
        ctx["done"] = True

    @task(id="after_partial", dependencies=[partial])
    def after_partial(ctx):
        return {"saw": sorted(ctx.keys())}

    result = runner.run(Workflow("partial_wf", [partial, after_partial]), {"in": 1})
    assert result.status == "completed"
    # The second attempt starts from the same input, not from the first attempt's writes.
    assert seen == [["in"], ["in"]]
    assert result.context["saw"] == ["done", "in"]
    assert "half_done" not in result.context


def test_retry_with_delay_ignores_retry_on_and_backoff(runner):
    calls = []

    @task(id="asks_again", retries=1, retry_delay=5.0, retry_on=(KeyError,))
    def asks_again(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise Retry("not yet", delay=0.1)
        return {"asked": len(calls)}

    result = runner.run(Workflow("asks_again_wf", [asks_again]), {})
    t = result.tasks["asks_again"]
    assert t.status == "completed", t.error
    assert t.attempts == 2
    assert t.history[0].status == "failed"
    assert "Retry" in t.history[0].error
    assert "not yet" in t.history[0].error
    # Retry's own delay, not retry_delay=5.0.
    [gap] = gaps(t.history)
    assert 0.09 <= gap < 0.1 + SLACK, gap


def test_retry_without_delay_uses_the_backoff(runner):
    calls = []

    @task(id="asks_backoff", retries=2, retry_delay=0.1, backoff="linear")
    def asks_backoff(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise Retry()

    t = runner.run(Workflow("asks_backoff_wf", [asks_backoff]), {}).tasks["asks_backoff"]
    assert t.status == "completed", t.error
    assert t.attempts == 3
    assert_gaps(t.history, [0.1, 0.2])


def test_retry_with_no_retries_left_fails(runner):
    calls = []

    @task(id="no_budget")
    def no_budget(ctx):
        calls.append(1)
        raise Retry("please", delay=0.01)

    result = runner.run(Workflow("no_budget_wf", [no_budget]), {})
    t = result.tasks["no_budget"]
    assert result.status == "failed"
    assert t.status == "failed"
    assert t.attempts == 1
    assert len(calls) == 1
    assert "Retry" in t.error
    assert "no retries are left" in t.error


def test_retry_exhausts_its_budget(runner):
    calls = []

    @task(id="keeps_asking", retries=2)
    def keeps_asking(ctx):
        calls.append(1)
        raise Retry(delay=0.02)

    t = runner.run(Workflow("keeps_asking_wf", [keeps_asking]), {}).tasks["keeps_asking"]
    assert t.status == "failed"
    assert t.attempts == 3
    assert len(calls) == 3
    assert "no retries are left" in t.error
    assert "no retries are left" in t.history[-1].error


def test_retry_from_an_async_task(runner):
    calls = []

    @task(id="async_asks", retries=1)
    async def async_asks(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise Retry(delay=0.05)
        return {"n": len(calls)}

    result = runner.run(Workflow("async_asks_wf", [async_asks]), {})
    assert result.status == "completed", result.tasks["async_asks"].error
    assert result.context["n"] == 2


def test_fail_fails_at_once_despite_retries(runner):
    calls = []

    @task(id="gives_up", retries=5, retry_delay=0.05)
    def gives_up(ctx):
        calls.append(1)
        raise Fail("nothing to parse")

    result = runner.run(Workflow("gives_up_wf", [gives_up]), {})
    t = result.tasks["gives_up"]
    assert result.status == "failed"
    assert t.status == "failed"
    assert t.attempts == 1
    assert len(calls) == 1
    assert t.error == "Fail: nothing to parse"
    assert 'raise Fail("nothing to parse")' in t.traceback


def test_fail_without_retries(runner):
    @task(id="gives_up_now")
    async def gives_up_now(ctx):
        raise Fail("async refusal")

    t = runner.run(Workflow("gives_up_now_wf", [gives_up_now]), {}).tasks["gives_up_now"]
    assert t.status == "failed"
    assert t.attempts == 1
    assert t.error == "Fail: async refusal"


def test_fail_after_a_retry_stops_the_retries(runner):
    calls = []

    @task(id="then_fail", retries=5, retry_delay=0.05)
    def then_fail(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("transient")
        raise Fail("permanent")

    t = runner.run(Workflow("then_fail_wf", [then_fail]), {}).tasks["then_fail"]
    assert t.attempts == 2
    assert [a.error for a in t.history] == ["OSError: transient", "Fail: permanent"]


def test_fail_ignores_a_retry_on_that_matches_it(runner):
    calls = []

    @task(id="fail_listed", retries=3, retry_delay=0.05, retry_on=(Exception,))
    def fail_listed(ctx):
        calls.append(1)
        raise Fail("no")

    t = runner.run(Workflow("fail_listed_wf", [fail_listed]), {}).tasks["fail_listed"]
    assert t.attempts == 1
    assert len(calls) == 1


def test_waiting_retry_is_ready_with_next_attempt_at(runner, rows):
    calls = []

    @task(id="waits", retries=1, retry_delay=1.0)
    def waits(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("first")
        return {"second": True}

    handle = runner.start(Workflow("waits_wf", [waits]), {})

    def fetch():
        return runner.get_run(handle.run_id)

    waiting = eventually(fetch, lambda r: r.tasks["waits"].history, timeout=10)
    t = waiting.tasks["waits"]
    assert waiting.status == "running"
    assert t.status == "ready"
    assert t.attempts == 1
    assert t.next_attempt_at is not None
    due = (t.next_attempt_at - t.history[0].finished_at).total_seconds()
    assert 0.95 <= due <= 1.05, due

    [row] = rows("SELECT status, ready_at FROM run_tasks WHERE run_id = ?", handle.run_id)
    assert row["status"] == "ready"
    assert micros_to_datetime(row["ready_at"]) == t.next_attempt_at

    result = handle.wait(timeout=30)
    t = result.tasks["waits"]
    assert t.status == "completed"
    assert t.next_attempt_at is None
    assert t.history[1].started_at >= waiting.tasks["waits"].next_attempt_at - timedelta(
        milliseconds=5
    )


def test_attempt_rows_match_history(runner, rows):
    calls = []

    @task(id="recorded", retries=3, retry_delay=0.05)
    def recorded(ctx):
        calls.append(1)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)} failed")
        return {"ok": True}

    result = runner.run(Workflow("recorded_wf", [recorded]), {})
    t = result.tasks["recorded"]
    db = rows(
        "SELECT attempt, status, started_at, finished_at, error, traceback FROM task_attempts "
        "WHERE run_id = ? AND task_id = 'recorded' ORDER BY attempt",
        result.run_id,
    )
    assert [r["attempt"] for r in db] == [1, 2, 3]
    assert [r["status"] for r in db] == ["failed", "failed", "completed"]
    assert [r["error"] for r in db] == [
        "ValueError: attempt 1 failed",
        "ValueError: attempt 2 failed",
        None,
    ]
    assert "Traceback" in db[0]["traceback"] and db[2]["traceback"] is None
    for r, a in zip(db, t.history, strict=True):
        assert r["started_at"] <= r["finished_at"]
        assert micros_to_datetime(r["started_at"]) == a.started_at
        assert micros_to_datetime(r["finished_at"]) == a.finished_at
        assert a.duration == a.finished_at - a.started_at
    for earlier, later in itertools.pairwise(db):
        assert earlier["finished_at"] <= later["started_at"]

    [task_row] = rows(
        "SELECT status, attempts, error, started_at, finished_at FROM run_tasks "
        "WHERE run_id = ? AND task_id = 'recorded'",
        result.run_id,
    )
    assert task_row["status"] == "completed"
    assert task_row["attempts"] == 3
    assert task_row["error"] is None
    # The task row times are those of the last attempt.
    assert task_row["started_at"] == db[-1]["started_at"]
    assert task_row["finished_at"] == db[-1]["finished_at"]


def test_failed_task_rows_after_exhausted_retries(runner, rows):
    body, _ = always_failing("recorded_fail", retries=1, retry_delay=0.05)

    result = runner.run(Workflow("recorded_fail_wf", [body]), {})
    [task_row] = rows(
        "SELECT status, attempts, error, traceback, ready_at FROM run_tasks "
        "WHERE run_id = ? AND task_id = 'recorded_fail'",
        result.run_id,
    )
    assert task_row["status"] == "failed"
    assert task_row["attempts"] == 2
    assert task_row["error"] == "ValueError: failure 2"
    assert "Traceback" in task_row["traceback"]
    assert [
        r["attempt"]
        for r in rows(
            "SELECT attempt FROM task_attempts WHERE run_id = ? ORDER BY attempt", result.run_id
        )
    ] == [1, 2]


def test_retry_of_a_task_does_not_delay_independent_tasks(runner):
    calls = []

    @task(id="slow_retrier", retries=1, retry_delay=0.5)
    def slow_retrier(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("retry me later")

    @task(id="independent")
    def independent(ctx):
        time.sleep(0.05)

    @task(id="independent_2", dependencies=[independent])
    def independent_2(ctx):
        time.sleep(0.05)

    result = runner.run(Workflow("no_delay_wf", [slow_retrier, independent, independent_2]), {})
    assert result.status == "completed"
    retrier = result.tasks["slow_retrier"]
    assert retrier.attempts == 2
    # Both independent tasks finished while the retrier was waiting for its second attempt.
    assert result.tasks["independent_2"].finished_at < retrier.history[1].started_at


@pytest.mark.parametrize("backoff", ["fixed", "linear", "exponential"])
def test_one_retry_waits_retry_delay_whatever_the_backoff(runner, backoff):
    body, _ = always_failing(f"first_wait_{backoff}", retries=1, retry_delay=0.2, backoff=backoff)

    t = runner.run(Workflow(f"first_wait_{backoff}_wf", [body]), {}).tasks[body.id]
    assert_gaps(t.history, [0.2])


def test_next_attempt_at_follows_the_requested_delay(runner):
    @task(id="asks_for_later", retries=1, retry_delay=0.05)
    def asks_for_later(ctx):
        raise Retry("later", delay=1.0)

    handle = runner.start(Workflow("asks_for_later_wf", [asks_for_later]), {})
    waiting = eventually(
        lambda: runner.get_run(handle.run_id),
        lambda r: (
            r.tasks["asks_for_later"].status == "ready" and r.tasks["asks_for_later"].attempts == 1
        ),
    )
    t = waiting.tasks["asks_for_later"]
    due = (t.next_attempt_at - t.history[0].finished_at).total_seconds()
    assert 0.95 <= due <= 1.05, due
    assert handle.cancel() is True
    assert handle.wait(timeout=10).status == "cancelled"


def test_many_tasks_retrying_at_once(runner):
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def flaky(i):
        @task(id=f"many_{i}", retries=2, retry_delay=0.05, backoff="linear", jitter=True)
        def body(ctx):
            with lock:
                counts[f"many_{i}"] = counts.get(f"many_{i}", 0) + 1
                n = counts[f"many_{i}"]
            if n < 3:
                raise ConnectionError(f"{i} attempt {n}")
            return {f"many_{i}": n}

        return body

    tasks = [flaky(i) for i in range(24)]
    result = runner.run(Workflow("many_retries_wf", tasks), {})
    assert result.status == "completed"
    for t in result.tasks.values():
        assert t.attempts == 3, (t.task_id, t.attempts, t.error)
        assert [a.status for a in t.history] == ["failed", "failed", "completed"]
    assert result.context == {f"many_{i}": 3 for i in range(24)}
