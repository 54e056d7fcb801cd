"""Writes leave memory once the tasks that depend on their writer directly are final; a
task (or hook) that reads one later reads it back from the database. What a task sees
does not change: only where the engine finds it.

The probe: a task rewrites the *stored* output of an earlier task behind the engine's
back. A task that reads the value from memory sees the original; one that reads it back
from the database sees the rewrite. So these tests fail if values are never evicted, or
evicted too early (a parent's writes must stay in memory while its children run)."""

from __future__ import annotations

import asyncio
import json

import pytest
from cloacina import DatabaseError, Workflow, rules, task
from helpers import execute

# The probe rewrites stored outputs: the runs as their waiters get them keep the values
# their tasks wrote (the database is what the probe made it).
pytestmark = pytest.mark.rewrites_stored_rows


def rewrite_output(backend: str, db_url: str, task_id: str, output: dict | str) -> None:
    """Replaces the stored output of task `task_id` (the test's only run) in place."""
    text = output if isinstance(output, str) else json.dumps(output)
    column = "output_inline" if backend == "sqlite" else "output"
    execute(db_url, f"UPDATE run_tasks SET {column} = ? WHERE task_id = ?", text, task_id)


def test_a_parent_is_read_from_memory_and_an_older_ancestor_from_the_database(
    runner, backend, db_url, rows
):
    seen: dict[str, object] = {}

    @task(id="rc_a")
    def a(ctx):
        ctx["a"] = 1
        ctx["cfg"] = {"k": [1, 2]}

    @task(id="rc_b", dependencies=[a])
    def b(ctx):
        rewrite_output(backend, db_url, "rc_a", {"a": 100, "cfg": {"k": [1, 2]}})
        seen["b"] = ctx["a"]  # its parent's writes: still in memory

    @task(id="rc_c", dependencies=[b])
    def c(ctx):
        seen["c"] = ctx["a"]  # rc_b is final: rc_a's writes left memory
        seen["c_cfg"] = ctx["cfg"]  # read, not changed: no write

    @task(id="rc_d", dependencies=[c])
    def d(ctx):
        ctx["cfg"]["k"].append(3)  # changed in place: a write
        seen["d_keys"] = list(ctx.keys())
        seen["d_len"] = len(ctx)

    result = runner.run(Workflow("rc_wf", [d]), {"input": True})
    assert result.status == "completed", result.error
    assert seen["b"] == 1, "a task reads its parent's writes from memory"
    assert seen["c"] == 100, "a grandparent's writes were read back from the database"
    assert seen["c_cfg"] == {"k": [1, 2]}
    assert seen["d_keys"] == ["input", "a", "cfg"] and seen["d_len"] == 3
    sql = "SELECT task_id, output FROM task_outputs WHERE task_id IN (?, ?)"
    stored = rows(sql, "rc_c", "rc_d")
    outputs = {r["task_id"]: json.loads(r["output"]) for r in stored}
    assert outputs == {"rc_c": {}, "rc_d": {"cfg": {"k": [1, 2, 3]}}}, (
        "a value read back and left unchanged is no write; changed in place, it is"
    )
    assert result.context["cfg"] == {"k": [1, 2, 3]}


def test_hooks_and_async_tasks_read_back_what_left_memory(runner, backend, db_url):
    seen: dict[str, object] = {}

    @task(id="rh_a")
    def a(ctx):
        ctx["a"] = 1

    @task(id="rh_b", dependencies=[a])
    def b(ctx):
        rewrite_output(backend, db_url, "rh_a", {"a": 7})

    @task(id="rh_c", dependencies=[b])
    async def c(ctx):
        await asyncio.sleep(0)
        seen["async"] = ctx["a"]

    def on_success(task_id, ctx):
        seen["hook"] = (task_id, ctx["a"], ctx.to_dict())

    @task(id="rh_d", dependencies=[c], on_success=on_success)
    def d(ctx):
        ctx["d"] = True

    result = runner.run(Workflow("rh_wf", [d]), {})
    assert result.status == "completed", result.error
    assert seen["async"] == 7
    assert seen["hook"] == ("rh_d", 7, {"a": 7, "d": True})


def test_a_key_a_trigger_rule_reads_stays_in_memory(runner, backend, db_url):
    """The scheduler reads a rule's keys itself, without the database: writes holding
    one are never evicted, so the rule (and every task) sees the value the task wrote."""

    @task(id="rr_a")
    def a(ctx):
        ctx["flag"] = 1

    @task(id="rr_b", dependencies=[a])
    def b(ctx):
        rewrite_output(backend, db_url, "rr_a", {"flag": 2})

    @task(id="rr_c", dependencies=[b], trigger=rules.context_value("flag", "==", 1))
    def c(ctx):
        ctx["seen"] = ctx["flag"]

    result = runner.run(Workflow("rr_wf", [c]), {})
    assert result.status == "completed", result.error
    assert result.tasks["rr_c"].status == "completed", result.tasks["rr_c"].reason
    assert result.context["seen"] == 1


def test_a_value_that_cannot_be_read_back_raises_naming_key_and_writer(runner, backend, db_url):
    seen: dict[str, object] = {}

    @task(id="rb_a")
    def a(ctx):
        ctx["a"] = 1

    @task(id="rb_b", dependencies=[a])
    def b(ctx):
        rewrite_output(backend, db_url, "rb_a", "not json")

    @task(id="rb_c", dependencies=[b])
    def c(ctx):
        try:
            ctx["a"]
        except DatabaseError as e:
            seen["error"] = str(e)
        rewrite_output(backend, db_url, "rb_a", {"a": 1})  # the run's result stays readable

    result = runner.run(Workflow("rb_wf", [c]), {})
    assert result.status == "completed", result.error
    assert "task 'rb_c' read key 'a', written by task 'rb_a'" in seen["error"], seen
    assert "reading it back from the database failed" in seen["error"], seen


def test_a_value_read_back_is_kept_for_the_next_readers(runner, backend, db_url):
    """Many tasks reading what the first task wrote read it from the database once."""
    seen: dict[str, object] = {}

    @task(id="rk_a")
    def a(ctx):
        ctx["a"] = 1

    @task(id="rk_b", dependencies=[a])
    def b(ctx):
        rewrite_output(backend, db_url, "rk_a", {"a": 100})

    @task(id="rk_c", dependencies=[b])
    def c(ctx):
        seen["c"] = ctx["a"]
        rewrite_output(backend, db_url, "rk_a", {"a": 200})

    @task(id="rk_d", dependencies=[c])
    def d(ctx):
        seen["d"] = ctx["a"]

    result = runner.run(Workflow("rk_wf", [d]), {})
    assert result.status == "completed", result.error
    assert (seen["c"], seen["d"]) == (100, 100), "read back by rk_c, then kept in memory"


def test_a_resumed_run_reads_back_what_its_completed_tasks_wrote(runner, backend, db_url):
    """Resuming starts with the writes no live task depends on directly in the database
    only: a task re-run reads them back."""
    attempts: list[object] = []

    @task(id="rs_a")
    def a(ctx):
        ctx["a"] = {"deep": [1]}

    @task(id="rs_b", dependencies=[a])
    def b(ctx):
        ctx["b"] = 2

    @task(id="rs_c", dependencies=[b])
    def c(ctx):
        attempts.append(ctx["a"])
        if len(attempts) == 1:
            rewrite_output(backend, db_url, "rs_a", {"a": {"deep": [7]}})
            raise RuntimeError("first pass fails")
        ctx["sum"] = ctx["a"]["deep"][0] + ctx["b"]

    first = runner.run(Workflow("rs_wf", [c]), {})
    assert first.status == "failed"
    second = runner.resume(first.run_id).wait()
    assert second.status == "completed", second.error
    assert attempts == [{"deep": [1]}, {"deep": [7]}], "the re-run read rs_a's stored output"
    assert second.context["sum"] == 9
