"""Timeouts: per attempt (sync and async bodies, with and without retries) and per run."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timezone

import pytest
from cloacina import Runner, TaskError, TaskInterrupted, TaskTimeout, Workflow, task
from helpers import busy_thread


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def test_task_timeout_is_a_task_error_and_a_timeout_error():
    assert issubclass(TaskTimeout, TaskError)
    assert issubclass(TaskTimeout, TimeoutError)


def test_sync_task_is_stopped_by_its_timeout(runner):
    raised: list[BaseException] = []
    stopped = threading.Event()
    steps = []

    @task(id="sync_loop", timeout=0.2)
    def sync_loop(ctx):
        try:
            for _ in range(500):  # up to 5 s in steps of 10 ms
                steps.append(1)
                time.sleep(0.01)
        except BaseException as exc:
            raised.append(exc)
            raise
        finally:
            stopped.set()
        return {"finished": True}

    begin = time.monotonic()
    result = runner.run(Workflow("sync_timeout_wf", [sync_loop]), {})
    elapsed = time.monotonic() - begin
    t = result.tasks["sync_loop"]
    assert result.status == "failed"
    assert t.status == "failed"
    assert t.attempts == 1
    assert t.error.startswith("TaskTimeout"), t.error
    assert "finished" not in result.context
    [attempt] = t.history
    assert attempt.status == "failed"
    assert attempt.error.startswith("TaskTimeout")
    assert 0.19 <= attempt.duration.total_seconds() < 1.5, attempt.duration
    assert elapsed < 3.0

    # TaskInterrupted was raised inside the loop and stopped it early.
    assert stopped.wait(3.0)
    [exc] = raised
    assert isinstance(exc, TaskInterrupted) and not isinstance(exc, Exception)
    assert len(steps) < 300, len(steps)


def test_async_task_is_cancelled_by_its_timeout(runner):
    cancelled = threading.Event()

    @task(id="async_sleeper", timeout=0.2)
    async def async_sleeper(ctx):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"finished": True}

    begin = time.monotonic()
    result = runner.run(Workflow("async_timeout_wf", [async_sleeper]), {})
    elapsed = time.monotonic() - begin
    t = result.tasks["async_sleeper"]
    assert t.status == "failed"
    assert t.attempts == 1
    assert t.error.startswith("TaskTimeout"), t.error
    assert "finished" not in result.context
    assert 0.19 <= t.history[0].duration.total_seconds() < 1.5
    assert elapsed < 3.0
    assert cancelled.wait(3.0), "the coroutine was not cancelled"


def test_task_finishing_within_its_timeout_completes(runner):
    @task(id="quick_sync", timeout=2.0)
    def quick_sync(ctx):
        time.sleep(0.05)
        return {"sync": 1}

    @task(id="quick_async", timeout=2.0)
    async def quick_async(ctx):
        await asyncio.sleep(0.05)
        return {"async": 1}

    result = runner.run(Workflow("quick_wf", [quick_sync, quick_async]), {})
    assert result.status == "completed"
    assert result.context == {"sync": 1, "async": 1}


def test_timed_out_attempt_is_retried(runner):
    calls = []

    @task(id="slow_then_fast", timeout=0.2, retries=2, retry_delay=0.05)
    def slow_then_fast(ctx):
        calls.append(1)
        if len(calls) == 1:
            for _ in range(300):
                time.sleep(0.01)
        return {"attempt": len(calls)}

    result = runner.run(Workflow("slow_then_fast_wf", [slow_then_fast]), {})
    t = result.tasks["slow_then_fast"]
    assert t.status == "completed", t.error
    assert t.attempts == 2
    assert result.context["attempt"] == 2
    assert [a.status for a in t.history] == ["failed", "completed"]
    assert t.history[0].error.startswith("TaskTimeout")


def test_async_timed_out_attempt_is_retried(runner):
    calls = []

    @task(id="async_slow_then_fast", timeout=0.2, retries=1, retry_delay=0.05)
    async def async_slow_then_fast(ctx):
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return {"attempt": len(calls)}

    result = runner.run(Workflow("async_slow_then_fast_wf", [async_slow_then_fast]), {})
    t = result.tasks["async_slow_then_fast"]
    assert t.status == "completed", t.error
    assert t.attempts == 2
    assert t.history[0].error.startswith("TaskTimeout")


def test_every_attempt_times_out(runner):
    @task(id="always_slow", timeout=0.15, retries=2, retry_delay=0.05)
    async def always_slow(ctx):
        await asyncio.sleep(5)

    t = runner.run(Workflow("always_slow_wf", [always_slow]), {}).tasks["always_slow"]
    assert t.status == "failed"
    assert t.attempts == 3
    assert all(a.error.startswith("TaskTimeout") for a in t.history), t.history
    for a in t.history:
        assert 0.14 <= a.duration.total_seconds() < 1.5, a.duration


def test_timeout_not_in_retry_on_is_not_retried(runner):
    @task(id="slow_picky", timeout=0.15, retries=3, retry_delay=0.05, retry_on=(ValueError,))
    async def slow_picky(ctx):
        await asyncio.sleep(5)

    t = runner.run(Workflow("slow_picky_wf", [slow_picky]), {}).tasks["slow_picky"]
    assert t.status == "failed"
    assert t.attempts == 1
    assert t.error.startswith("TaskTimeout")


@pytest.mark.parametrize("retry_on", [TimeoutError, TaskError, TaskTimeout])
def test_timeout_matching_retry_on_is_retried(runner, retry_on):
    @task(id="slow_listed", timeout=0.15, retries=1, retry_delay=0.05, retry_on=(retry_on,))
    async def slow_listed(ctx):
        await asyncio.sleep(5)

    t = runner.run(Workflow("slow_listed_wf", [slow_listed]), {}).tasks["slow_listed"]
    assert t.status == "failed"
    assert t.attempts == 2


def test_timeout_frees_the_slot_at_once(db_url):
    """With one slot, a sync task blocked in C outlives its timeout; another task runs
    in the meantime instead of waiting for the blocked thread."""
    thread_ended: list[datetime] = []
    release = threading.Event()

    @task(id="blocked_in_c", timeout=0.2)
    def blocked_in_c(ctx):
        try:
            release.wait(5)  # one call blocked in C: TaskTimeout cannot interrupt it
        finally:
            thread_ended.append(now_utc())

    @task(id="other")
    def other(ctx):
        release.set()
        return {"other": True}

    runner = Runner(db_url, max_concurrency=1)
    try:
        wf = Workflow("slot_wf", [blocked_in_c, other])
        result = runner.run(wf, {})
    finally:
        release.set()
        runner.close()
    blocked, other_t = result.tasks["blocked_in_c"], result.tasks["other"]
    assert blocked.status == "failed"
    assert blocked.error.startswith("TaskTimeout")
    assert other_t.status == "completed"
    assert blocked.history[0].started_at < other_t.started_at
    # "other" started while blocked_in_c's thread was still inside the task ...
    [ended] = thread_ended
    assert other_t.started_at < ended
    # ... right after the timeout (not after the 5 s wait: "other" itself released it).
    assert (other_t.started_at - blocked.history[0].started_at).total_seconds() < 1.5


def test_late_result_of_a_timed_out_sync_task_is_discarded(runner, rows):
    calls = []
    first_returned = threading.Event()
    release = threading.Event()

    @task(id="late", timeout=0.2, retries=1, retry_delay=0.05)
    def late(ctx):
        calls.append(1)
        n = len(calls)
        if n == 1:
            try:
                release.wait(5)  # blocked in C past the timeout
            except TaskInterrupted:
                pass
            first_returned.set()
            return {"from_attempt": n, "late": True}
        # The second attempt lets the first one go, and waits until it has returned.
        release.set()
        assert first_returned.wait(5)
        time.sleep(0.1)
        return {"from_attempt": n}

    result = runner.run(Workflow("late_wf", [late]), {})
    t = result.tasks["late"]
    assert first_returned.is_set()
    assert t.status == "completed", t.error
    assert t.attempts == 2
    assert result.context == {"from_attempt": 2}
    assert [a.status for a in t.history] == ["failed", "completed"]
    assert t.history[0].error.startswith("TaskTimeout")

    # Nothing of the late result shows up afterwards either.
    time.sleep(0.3)
    again = runner.get_run(result.run_id)
    assert again.context == {"from_attempt": 2}
    assert again.tasks["late"].attempts == 2
    assert len(rows("SELECT * FROM task_attempts WHERE run_id = ?", result.run_id)) == 2


def test_late_result_of_a_timed_out_task_without_retries_is_discarded(runner):
    release = threading.Event()
    returned = threading.Event()

    @task(id="late_once", timeout=0.15)
    def late_once(ctx):
        try:
            release.wait(0.6)
        except TaskInterrupted:
            pass
        returned.set()
        return {"late": True}

    result = runner.run(Workflow("late_once_wf", [late_once]), {})
    assert result.status == "failed"
    assert returned.wait(5)
    time.sleep(0.3)
    again = runner.get_run(result.run_id)
    assert again.status == "failed"
    assert again.tasks["late_once"].status == "failed"
    assert again.tasks["late_once"].error.startswith("TaskTimeout")
    assert "late" not in again.context


def test_task_timeout_does_not_leak_into_later_tasks_on_the_thread(db_url):
    """After a timed-out sync task, the TaskTimeout aimed at it must not hit whatever its
    thread runs next: many short tasks on one slot all complete."""
    blocked_ident: list[int] = []
    blocked_done = threading.Event()
    idents: list[int] = []

    @task(id="times_out", timeout=0.1)
    def times_out(ctx):
        blocked_ident.append(threading.get_ident())
        try:
            time.sleep(0.4)  # blocked in C past the timeout
        finally:
            blocked_done.set()

    def short(task_id, deps, trigger=None):
        options = {"trigger": trigger} if trigger else {}

        @task(id=task_id, dependencies=deps, **options)
        def body(ctx):
            idents.append(threading.get_ident())
            for _ in range(3):
                time.sleep(0.005)
            return {task_id: True}

        return body

    from cloacina import rules

    chain = [short("short_0", [times_out], rules.all_done())]
    for i in range(1, 40):
        chain.append(short(f"short_{i}", [chain[-1]]))

    # Two slots: the first run is a chain (one task at a time, on the timed-out thread's
    # sibling); the second starts two tasks at once, which needs both pool threads, so
    # the timed-out one runs later tasks.
    runner = Runner(db_url, max_concurrency=2)
    try:
        result = runner.run(Workflow("leak_wf", [times_out, *chain]), {})
        assert blocked_done.wait(5)
        # A second run on the same runner, after the timed-out thread is free again.
        followup = [short(f"again_{i}", []) for i in range(30)]
        second = runner.run(Workflow("leak_wf_2", followup), {})
    finally:
        runner.close()

    assert result.tasks["times_out"].error.startswith("TaskTimeout")
    failures = {
        tid: t.error
        for r in (result, second)
        for tid, t in r.tasks.items()
        if tid != "times_out" and t.status != "completed"
    }
    assert failures == {}
    assert second.status == "completed"
    assert all(t.attempts == 1 for t in second.tasks.values())
    assert len(idents) == 70
    # Precondition of the check: the timed-out task's thread did run later tasks.
    assert blocked_ident[0] in idents, "the timed-out thread was never reused"


def test_racing_timeouts_do_not_leak(runner):
    """Tasks that end right around their timeout, then many plain tasks: none of the
    plain ones may see a stray TaskTimeout."""

    def racer(i):
        @task(id=f"racer_{i}", timeout=0.03)
        def body(ctx):
            deadline = time.monotonic() + 0.03
            while time.monotonic() < deadline:
                time.sleep(0.001)

        return body

    def plain(i):
        @task(id=f"plain_{i}")
        def body(ctx):
            for _ in range(5):
                time.sleep(0.001)

        return body

    racers = [racer(i) for i in range(40)]
    runner.run(Workflow("racers_wf", racers), {})
    plains = [plain(i) for i in range(80)]
    result = runner.run(Workflow("plains_wf", plains), {})
    bad = {tid: t.error for tid, t in result.tasks.items() if t.status != "completed"}
    assert bad == {}


def test_workflow_timeout_fails_the_run_and_cancels_the_rest(runner):
    @task(id="fast")
    def fast(ctx):
        return {"fast": True}

    endless_cancelled = threading.Event()

    @task(id="endless")
    async def endless(ctx):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            endless_cancelled.set()
            raise

    @task(id="after_endless", dependencies=[endless])
    def after_endless(ctx):
        return {"after": True}

    wf = Workflow("bounded_wf", [fast, endless, after_endless], timeout=0.4)
    begin = time.monotonic()
    result = runner.run(wf, {})
    elapsed = time.monotonic() - begin
    assert result.status == "failed"
    assert "timed out" in result.error
    assert result.tasks["fast"].status == "completed"
    assert result.tasks["endless"].status == "cancelled"
    assert result.tasks["after_endless"].status == "cancelled"
    assert "timed out" in result.tasks["endless"].reason
    assert result.context == {"fast": True}
    assert 0.35 <= result.duration.total_seconds() < 2.5, result.duration
    assert elapsed < 3.0
    # The async body was cancelled.
    assert endless_cancelled.wait(5)


def test_workflow_timeout_with_a_running_sync_task(runner):
    release = threading.Event()
    finished = threading.Event()
    stopped = threading.Event()

    @task(id="sync_endless")
    def sync_endless(ctx):
        try:
            for _ in range(1000):  # up to 10 s unless released
                if release.is_set():
                    break
                time.sleep(0.01)
        except TaskInterrupted:
            stopped.set()
            raise
        finished.set()
        return {"sync_endless": True}

    @task(id="after_sync", dependencies=[sync_endless])
    def after_sync(ctx):
        return {"after": True}

    wf = Workflow("bounded_sync_wf", [sync_endless, after_sync], timeout=0.3)
    begin = time.monotonic()
    try:
        result = runner.run(wf, {})
        elapsed = time.monotonic() - begin
        # The body is stopped where it runs (it would loop on until released).
        assert stopped.wait(5)
    finally:
        release.set()
    assert elapsed < 3.0
    assert result.status == "failed"
    assert "timed out" in result.error
    assert result.tasks["sync_endless"].status == "cancelled"
    assert result.tasks["after_sync"].status == "cancelled"
    assert not finished.is_set()
    time.sleep(0.3)
    again = runner.get_run(result.run_id)
    assert again.status == "failed"
    assert again.tasks["sync_endless"].status == "cancelled"
    assert again.context == {}


def test_workflow_timeout_not_reached(runner):
    @task(id="in_time")
    async def in_time(ctx):
        await asyncio.sleep(0.05)
        return {"in_time": True}

    result = runner.run(Workflow("unbounded_wf", [in_time], timeout=5), {})
    assert result.status == "completed"
    assert result.error is None


def test_workflow_timeout_cancels_a_waiting_retry(runner):
    calls = []

    @task(id="retry_forever", retries=10, retry_delay=0.2)
    def retry_forever(ctx):
        calls.append(1)
        raise ValueError("again")

    result = runner.run(Workflow("bounded_retry_wf", [retry_forever], timeout=0.5), {})
    t = result.tasks["retry_forever"]
    assert result.status == "failed"
    assert "timed out" in result.error
    assert t.status == "cancelled"
    assert 1 <= t.attempts <= 4
    n = len(calls)
    time.sleep(0.5)
    assert len(calls) == n, "attempts went on after the run timed out"


def test_run_times_in_history_for_a_timeout(runner):
    @task(id="hist_timeout", timeout=0.2, retries=1, retry_delay=0.1)
    async def hist_timeout(ctx):
        await asyncio.sleep(5)

    result = runner.run(Workflow("hist_timeout_wf", [hist_timeout]), {})
    first, second = result.tasks["hist_timeout"].history
    assert first.finished_at <= second.started_at
    gap = (second.started_at - first.finished_at).total_seconds()
    assert 0.09 <= gap < 1.0
    assert result.tasks["hist_timeout"].status == "failed"


def test_result_of_an_async_task_that_swallows_its_cancellation_is_discarded(runner):
    swallowed = threading.Event()
    returned = threading.Event()

    @task(id="stubborn", timeout=0.15)
    async def stubborn(ctx):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            swallowed.set()
            await asyncio.sleep(0.2)
        returned.set()
        return {"stubborn": True}

    result = runner.run(Workflow("stubborn_wf", [stubborn]), {})
    t = result.tasks["stubborn"]
    assert t.status == "failed"
    assert t.error.startswith("TaskTimeout")
    assert t.history[0].duration.total_seconds() < 0.15 + 0.6
    assert swallowed.wait(5)
    assert returned.wait(5)
    time.sleep(0.3)
    again = runner.get_run(result.run_id)
    assert again.tasks["stubborn"].status == "failed"
    assert again.tasks["stubborn"].attempts == 1
    assert again.context == {}


def test_timed_out_attempt_duration_is_the_timeout(runner):
    release = threading.Event()

    @task(id="blocked_duration", timeout=0.2)
    def blocked_duration(ctx):
        release.wait(1.5)  # blocked in C well past the timeout

    try:
        result = runner.run(Workflow("blocked_duration_wf", [blocked_duration]), {})
    finally:
        release.set()
    [attempt] = result.tasks["blocked_duration"].history
    # The attempt ends when it times out, not when its thread gives up.
    assert 0.19 <= attempt.duration.total_seconds() < 0.2 + 0.6, attempt.duration


def test_tiny_timeout_cancels_the_first_async_task_of_a_new_runner(make_db_url):
    """Even when the timeout expires before the coroutine is under way (the first async
    task of a new Runner), the coroutine is cancelled, not left to run to its end."""
    started: set[int] = set()
    cancelled: set[int] = set()
    finished: set[int] = set()

    @task(id="tiny_timeout", timeout=0.0001)
    async def tiny_timeout(ctx):
        i = ctx["i"]
        started.add(i)
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            cancelled.add(i)
            raise
        finished.add(i)

    wf = Workflow("tiny_timeout_wf", [tiny_timeout])
    # Another busy Python thread competes for the GIL, as other work in the process would.
    with busy_thread():
        for i in range(12):
            with Runner(make_db_url(f"tiny_{i}")) as fresh:
                result = fresh.run(wf, {"i": i})
                assert result.tasks["tiny_timeout"].error.startswith("TaskTimeout")
                # Wait for the coroutine, if it started, to be cancelled or to end.
                deadline = time.monotonic() + 1.0
                while i not in cancelled and i not in finished and time.monotonic() < deadline:
                    time.sleep(0.01)
    assert finished == set(), (
        f"{len(finished)} of {len(started)} started coroutines (of 12 timed-out attempts) "
        "were not cancelled and ran to their end"
    )
