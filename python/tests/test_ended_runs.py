"""A run that ended in its own runner reaches the caller waiting for it as the runner
committed it, kept in memory (rust/engine/kept.rs), without being read back from the
database; anything else is read as before.

The probe: once a run has ended, a stored row is rewritten behind the runner's back. A
wait that gets the rewrite read the database; one that does not got the run as kept.
(Every other test of the suite also holds what a waiter gets to what the database has:
`ended_runs_match_the_database` in conftest.py.)"""

from __future__ import annotations

import asyncio

import pytest
from cloacina import Retry, Runner, Skip, Workflow, rules, task
from helpers import eventually, execute


def ended(runner: Runner, run_id: str) -> None:
    """Waits, without waiting on the run's handle, until run `run_id` is final."""
    final = ("completed", "failed", "cancelled")
    eventually(lambda: runner.get_run(run_id).status, lambda s: s in final, timeout=30)


def rewrite_error(db_url: str, run_id: str) -> None:
    execute(db_url, "UPDATE runs SET error = ? WHERE run_id = ?", "rewritten", run_id)


@task(id="er_one")
def er_one(ctx):
    ctx["n"] = 1


ONE = Workflow("er_one_wf", [er_one])


@pytest.mark.rewrites_stored_rows
def test_the_first_wait_after_the_end_gets_the_run_as_committed_later_ones_read_it(runner, db_url):
    handle = runner.start(ONE, {"n": 0})
    ended(runner, handle.run_id)
    rewrite_error(db_url, handle.run_id)
    first = handle.wait(10)
    assert (first.status, first.error, first.context) == ("completed", None, {"n": 1})
    assert runner.get_run(handle.run_id).error == "rewritten", "get_run reads the database"
    assert handle.wait(10).error == "rewritten", "a second wait reads the database"


@pytest.mark.asyncio
@pytest.mark.rewrites_stored_rows
async def test_awaiting_a_handle_gets_the_run_as_committed(runner, db_url):
    handle = runner.start(ONE, {"n": 0})
    await asyncio.to_thread(ended, runner, handle.run_id)
    rewrite_error(db_url, handle.run_id)
    result = await handle
    assert (result.status, result.error) == ("completed", None)


@pytest.mark.rewrites_stored_rows
def test_a_run_too_big_to_keep_is_read_from_the_database(runner, db_url):
    @task(id="er_big")
    def big(ctx):
        ctx["blob"] = "x" * 100_000  # past the 64 KiB a kept run may hold

    handle = runner.start(Workflow("er_big_wf", [big]))
    ended(runner, handle.run_id)
    rewrite_error(db_url, handle.run_id)
    result = handle.wait(10)
    assert result.error == "rewritten"
    assert len(result.context["blob"]) == 100_000


@pytest.mark.rewrites_stored_rows
def test_ended_runs_nobody_waited_for_are_kept_up_to_a_bound(db_url):
    with Runner(db_url) as runner:
        handles = [runner.start(ONE, {"n": 0}) for _ in range(1030)]
        for handle in handles:
            ended(runner, handle.run_id)
        execute(db_url, "UPDATE runs SET error = ?", "rewritten")
        results = [handle.wait(10) for handle in handles]
    # At most 1024 are kept: the runs that ended first (not always the first started:
    # runs run side by side) made room for the later ones, and were read.
    read = [r.finished_at for r in results if r.error == "rewritten"]
    kept = [r.finished_at for r in results if r.error is None]
    assert (len(read), len(kept)) == (6, 1024)
    assert max(read) <= min(kept)


def test_a_failed_run_resumed_before_its_wait_is_waited_for_to_its_new_end(runner):
    attempts: list[int] = []

    @task(id="er_flaky")
    def flaky(ctx):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first pass fails")
        ctx["ok"] = True

    handle = runner.start(Workflow("er_flaky_wf", [flaky]))
    ended(runner, handle.run_id)
    runner.resume(handle.run_id)
    result = handle.wait(10)
    assert (result.status, result.context, len(attempts)) == ("completed", {"ok": True}, 2)


def test_every_outcome_reaches_the_waiter_as_the_database_holds_it(runner):
    """Retries, a hook that raises, a task that skips itself, a trigger rule's skip, a
    failure and what it leaves upstream_failed, events: all as `get_run` reads them."""
    tries: list[int] = []

    def bad_hook(task_id, ctx):
        raise ValueError("the hook broke")

    @task(id="er_retried", retries=2, retry_delay=0.01, on_success=bad_hook)
    def retried(ctx):
        tries.append(1)
        if len(tries) < 3:
            raise Retry(f"try {len(tries)} fails")
        ctx["tries"] = len(tries)

    @task(id="er_skips", dependencies=[retried])
    def skips(ctx):
        raise Skip("nothing to do")

    @task(id="er_gated", dependencies=[retried], trigger=rules.context_value("go", "==", True))
    def gated(ctx):
        ctx["gated"] = True

    @task(id="er_fails", dependencies=[retried])
    def fails(ctx):
        ctx["partial"] = 1
        raise ValueError("broken")

    @task(id="er_after", dependencies=[fails])
    def after(ctx):
        ctx["after"] = True

    workflow = Workflow("er_shapes_wf", [retried, skips, gated, fails, after])
    result = runner.run(workflow, {"go": False})
    stored = runner.get_run(result.run_id)
    assert result == stored
    tasks = result.tasks
    assert result.status == "failed"
    assert [a.status for a in tasks["er_retried"].history] == ["failed", "failed", "completed"]
    assert tasks["er_retried"].hook_errors and tasks["er_skips"].status == "skipped"
    assert tasks["er_gated"].status == "skipped"
    assert tasks["er_after"].status == "upstream_failed"
    assert result.context == {"go": False, "tries": 3}
