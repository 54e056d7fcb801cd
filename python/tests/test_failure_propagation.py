"""Failure propagation as Airflow users know it: ``upstream_failed``, every trigger rule
against every mix of upstream outcomes, ``Skip`` raised by a task, and root tasks.

The expected outcomes come from ``airflow_outcome`` below: Apache Airflow's trigger rules
restated from its documentation and ``trigger_rule_dep.py`` (the state a task takes once
every upstream task is done), independently of the engine's code.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections import Counter
from pathlib import Path

import pytest
from cloacina import Fail, Runner, Skip, Workflow, rules, task
from helpers import query

RAN, SKIPPED, BLOCKED = "completed", "skipped", "upstream_failed"
OUTCOMES = ("succeeded", "failed", "skipped", "upstream_failed")
RULES = (
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "all_skipped",
    "all_done_min_one_success",
    "always",
)


def airflow_outcome(rule: str, upstream: list[str]) -> str:
    """What Airflow makes of a task with ``rule`` once its upstream tasks ended as
    ``upstream`` (each one of OUTCOMES): ``completed`` (it runs), ``skipped`` or
    ``upstream_failed``."""
    n = Counter(upstream)
    total = len(upstream)
    success, failed, skipped = n["succeeded"], n["failed"], n["skipped"]
    upstream_failed = n["upstream_failed"]
    if total == 0:
        return RAN  # a task without upstream runs whatever its rule
    if rule == "all_success":
        if failed or upstream_failed:
            return BLOCKED
        return SKIPPED if skipped else RAN
    if rule == "all_failed":
        return SKIPPED if success or skipped else RAN
    if rule in ("all_done", "always"):
        return RAN
    if rule == "one_success":
        if skipped == total:
            return SKIPPED
        return BLOCKED if success == 0 else RAN
    if rule == "one_failed":
        return RAN if failed or upstream_failed else SKIPPED
    if rule == "one_done":
        return RAN if failed or success else SKIPPED
    if rule == "none_failed":
        return BLOCKED if failed or upstream_failed else RAN
    if rule == "none_failed_min_one_success":
        if failed or upstream_failed:
            return BLOCKED
        return SKIPPED if skipped == total else RAN
    if rule == "none_skipped":
        return SKIPPED if skipped else RAN
    if rule == "all_skipped":
        return RAN if skipped == total else SKIPPED
    if rule == "all_done_min_one_success":
        if skipped:
            return SKIPPED
        return BLOCKED if success == 0 else RAN
    raise AssertionError(rule)


def upstream_task(kind: str, i: int):
    """A task that ends as ``kind``; an ``upstream_failed`` one is downstream of a task
    that fails, so the failure is two steps up from the probes."""
    tid = f"{kind}_{i}"
    if kind == "succeeded":

        @task(id=tid)
        def ok(ctx):
            return {tid: True}

        return ok
    if kind == "failed":

        @task(id=tid)
        def bad(ctx):
            ctx[f"partial_{tid}"] = 1
            raise Fail(f"{tid} failed")

        return bad
    if kind == "skipped":

        @task(id=tid, trigger=rules.context_value("never_set", "exists"))
        def skipped(ctx):
            return {tid: True}

        return skipped

    @task(id=f"origin_{i}")
    def origin(ctx):
        raise Fail(f"origin_{i} failed")

    @task(id=tid, dependencies=[origin])
    def blocked(ctx):
        return {tid: True}

    return blocked


COMBOS = [
    list(combo)
    for size in (1, 2, 3)
    for combo in itertools.combinations_with_replacement(OUTCOMES, size)
]


@pytest.mark.parametrize("combo", COMBOS, ids=["+".join(c) for c in COMBOS])
def test_every_rule_against_upstream_outcomes(runner, combo):
    ups = [upstream_task(kind, i) for i, kind in enumerate(combo)]
    ran: list[str] = []
    probes = []
    for rule in RULES:

        @task(id=f"probe_{rule}", dependencies=ups, trigger=getattr(rules, rule)())
        def probe(ctx, rule=rule):
            ran.append(rule)
            return {f"probe_{rule}": True}

        probes.append(probe)
    result = runner.run(Workflow("matrix", probes))
    for up, kind in zip(ups, combo, strict=True):
        expected = {"succeeded": RAN, "failed": "failed"}.get(kind, kind)
        assert result.tasks[up.id].status == expected, (up.id, result.tasks[up.id])
    got = {rule: result.tasks[f"probe_{rule}"].status for rule in RULES}
    want = {rule: airflow_outcome(rule, combo) for rule in RULES}
    assert got == want
    assert sorted(ran) == sorted(r for r in RULES if want[r] == RAN)
    for rule in RULES:
        t = result.tasks[f"probe_{rule}"]
        if want[rule] == RAN:
            assert t.reason is None and t.attempts == 1
        else:
            assert t.reason and t.attempts == 0 and t.history == []
        if want[rule] == BLOCKED:
            # The reason names a task that actually failed, even two steps up.
            assert "failed" in t.reason and ("'failed_" in t.reason or "'origin_" in t.reason)
    # The run's own rule: any failed task fails it; upstream_failed ones do not count.
    assert result.status == ("failed" if {"failed", "upstream_failed"} & set(combo) else RAN)


def test_a_failure_three_steps_up_reaches_alerts_and_joins(runner):
    @task
    def extract(ctx):
        raise Fail("source unreachable")

    @task(dependencies=[extract])
    def transform(ctx):
        return {"t": 1}

    @task(dependencies=[transform])
    def load(ctx):
        return {"l": 1}

    @task(dependencies=[load], trigger=rules.one_failed())
    def alert(ctx):
        return {"alerted": True}

    @task(dependencies=[load], trigger=rules.all_failed())
    def alert_all(ctx):
        return {"alerted_all": True}

    @task(dependencies=[load], trigger=rules.none_failed())
    def join(ctx):
        return {"joined": True}

    @task(dependencies=[load], trigger=rules.all_done())
    def cleanup(ctx):
        return {"cleaned": True}

    result = runner.run(Workflow("etl_alerts", [alert, alert_all, join, cleanup]))
    status = {tid: t.status for tid, t in result.tasks.items()}
    assert status == {
        "extract": "failed",
        "transform": BLOCKED,
        "load": BLOCKED,
        "alert": RAN,
        "alert_all": RAN,
        "join": BLOCKED,
        "cleanup": RAN,
    }
    for tid in ("transform", "load", "join"):
        assert result.tasks[tid].reason == "upstream task 'extract' failed"
    assert result.status == "failed"
    assert result.error.startswith("task 'extract' failed")


def test_the_standard_join_after_a_branch(runner):
    @task
    def classify(ctx):
        return {"big": ctx["n"] > 10}

    @task(dependencies=[classify], trigger=rules.context_value("big", "==", True))
    def big(ctx):
        return {"path": "big"}

    @task(dependencies=[classify], trigger=rules.context_value("big", "==", False))
    def small(ctx):
        return {"path": "small"}

    @task(dependencies=[big, small], trigger=rules.none_failed_min_one_success())
    def merge(ctx):
        return {"merged": ctx["path"]}

    @task(dependencies=[big, small])
    def strict_merge(ctx):
        return {"strict": True}

    wf = Workflow("branch_join", [merge, strict_merge])
    for n, path in [(50, "big"), (1, "small")]:
        result = runner.run(wf, {"n": n})
        assert result.status == "completed"
        assert result.tasks["merge"].status == RAN
        assert result.context["merged"] == path
        # The default rule skips after a skipped branch (and says which).
        assert result.tasks["strict_merge"].status == SKIPPED
        assert "was skipped" in result.tasks["strict_merge"].reason


@pytest.mark.parametrize("rule", [*RULES, "context_value_true"])
def test_root_tasks_run_whatever_their_dependency_rule(runner, rule):
    trigger = (
        rules.context_value("go", "==", True)
        if rule == "context_value_true"
        else getattr(rules, rule)()
    )

    @task(id="root_probe", trigger=trigger)
    def root_probe(ctx):
        return {"ran": True}

    result = runner.run(Workflow("root_rules", [root_probe]), {"go": True})
    assert result.tasks["root_probe"].status == RAN
    assert result.context["ran"] is True


def test_a_context_rule_still_decides_a_root_task(runner):
    @task(id="gated_root", trigger=rules.context_value("go", "==", True))
    def gated_root(ctx):
        return {"ran": True}

    result = runner.run(Workflow("gated_root", [gated_root]), {"go": False})
    assert result.tasks["gated_root"].status == SKIPPED
    assert result.status == "completed"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_skip_raised_by_a_task(runner, is_async, rows):
    calls = []

    def body(ctx):
        calls.append(1)
        ctx["half_done"] = True
        if not ctx.get("data"):
            raise Skip("no new data today")
        return {"processed": True}

    if is_async:

        @task(id="maybe", retries=3, retry_delay=0, on_failure=lambda *a: calls.append("hook"))
        async def maybe(ctx):
            await asyncio.sleep(0)
            return body(ctx)

    else:

        @task(id="maybe", retries=3, retry_delay=0, on_failure=lambda *a: calls.append("hook"))
        def maybe(ctx):
            return body(ctx)

    @task(dependencies=[maybe])
    def after(ctx):
        return {"after": True}

    @task(dependencies=[maybe], trigger=rules.none_failed())
    def tolerant(ctx):
        return {"tolerant": True}

    @task(dependencies=[maybe], trigger=rules.all_skipped())
    def when_skipped(ctx):
        return {"noticed": True}

    wf = Workflow("skipper", [after, tolerant, when_skipped])
    result = runner.run(wf, {"data": []})
    t = result.tasks["maybe"]
    assert t.status == SKIPPED
    assert t.reason == "no new data today"
    assert t.error is None and t.traceback is None
    assert t.attempts == 1 and calls == [1], "no retry, no failure hook"
    assert [(a.attempt, a.status) for a in t.history] == [(1, SKIPPED)]
    assert "half_done" not in result.context, "a skipped task's writes are discarded"
    assert result.tasks["after"].status == SKIPPED
    assert result.tasks["tolerant"].status == RAN
    assert result.tasks["when_skipped"].status == RAN
    assert result.status == "completed"
    [row] = rows(
        "SELECT t.status, t.reason, o.output FROM run_tasks t "
        "LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_id = t.task_id "
        "WHERE t.run_id = ? AND t.task_id = 'maybe'",
        result.run_id,
    )
    assert row == {"status": SKIPPED, "reason": "no new data today", "output": None}
    [attempt] = rows(
        "SELECT attempt, status FROM task_attempts WHERE run_id = ? AND task_id = 'maybe'",
        result.run_id,
    )
    assert attempt == {"attempt": 1, "status": SKIPPED}

    calls.clear()
    ran = runner.run(wf, {"data": [1]})
    assert ran.tasks["maybe"].status == RAN and ran.context["processed"] is True
    assert ran.tasks["when_skipped"].status == SKIPPED


def test_skip_after_a_failed_attempt_keeps_the_history(runner):
    attempts = []

    @task(id="flaky_then_skip", retries=2, retry_delay=0)
    def flaky_then_skip(ctx):
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("flaky")
        raise Skip()

    result = runner.run(Workflow("flaky_skip", [flaky_then_skip]))
    t = result.tasks["flaky_then_skip"]
    assert t.status == SKIPPED and t.reason == "the task skipped itself"
    assert [(a.attempt, a.status) for a in t.history] == [(1, "failed"), (2, SKIPPED)]


def test_resume_reruns_failed_and_upstream_failed_tasks(runner):
    state = {"broken": True}

    @task
    def source(ctx):
        if state["broken"]:
            raise Fail("not yet")
        return {"rows": 3}

    @task(dependencies=[source])
    def double(ctx):
        return {"doubled": ctx["rows"] * 2}

    @task(dependencies=[double])
    def publish(ctx):
        return {"published": ctx["doubled"]}

    wf = Workflow("resumable", [publish])
    first = runner.run(wf)
    assert [first.tasks[t].status for t in ("source", "double", "publish")] == [
        "failed",
        BLOCKED,
        BLOCKED,
    ]
    state["broken"] = False
    again = runner.resume(first.run_id).wait(timeout=30)
    assert again.status == "completed"
    assert again.context == {"rows": 3, "doubled": 6, "published": 6}
    assert [again.tasks[t].attempts for t in ("source", "double", "publish")] == [2, 1, 1]


@pytest.mark.sqlite_only("the schema4.db file of an older version")
def test_a_file_from_before_upstream_failed_is_upgraded_in_place(tmp_path: Path):
    """``data/schema4.db`` was written by the version before this status existed (see
    ``data/make_schema4_db.py``): tasks skipped because something upstream failed were
    stored as ``skipped``."""
    path = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "data" / "schema4.db", path)
    [old] = query(path, "SELECT run_id FROM runs")

    @task
    def extract(ctx):
        return {"e": 1}

    @task(dependencies=[extract])
    def transform(ctx):
        return {"t": 1}

    @task(dependencies=[transform])
    def load(ctx):
        return {"l": 1}

    @task(dependencies=[extract], trigger=rules.none_failed())
    def join(ctx):
        return {"j": 1}

    @task(dependencies=[transform], trigger=rules.none_failed())
    def late_join(ctx):
        return {"late": 1}

    @task
    def ok(ctx):
        return {"ok": 1}

    @task(dependencies=[ok], trigger=rules.context_value("mode", "==", "full"))
    def optional(ctx):
        return {"optional": 1}

    @task(dependencies=[optional])
    def after_optional(ctx):
        return {"after": 1}

    tasks = [extract, transform, load, join, late_join, ok, optional, after_optional]
    Workflow("schema4", tasks)
    with Runner(f"sqlite:///{path}", recover=False) as runner:
        before = runner.get_run(old["run_id"])
        assert before is not None
        status = {tid: t.status for tid, t in before.tasks.items()}
        assert status == {
            "extract": "failed",
            "transform": BLOCKED,  # "upstream task 'extract' failed"
            "load": BLOCKED,  # "upstream task 'transform' was skipped", transform blocked
            "join": BLOCKED,  # "trigger rule none_failed: upstream task 'extract' failed"
            "late_join": RAN,  # ran under the old rules: history is not rewritten
            "ok": RAN,
            "optional": SKIPPED,  # its rule chose not to run it
            "after_optional": SKIPPED,
        }
        # Outputs written before migration 7 (in the task rows) still read back.
        assert (before.context.get("ok"), before.context.get("late")) == (1, 1)
        outputs = query(path, "SELECT task_id, output FROM task_outputs ORDER BY task_id")
        assert outputs == [
            {"task_id": "late_join", "output": '{"late":1}'},
            {"task_id": "ok", "output": '{"ok":1}'},
        ]
        # The attempts view still lists exactly the finished attempts.
        listed = query(path, "SELECT task_id, status FROM task_attempts ORDER BY task_id")
        assert listed == [
            {"task_id": "extract", "status": "failed"},
            {"task_id": "late_join", "status": RAN},
            {"task_id": "ok", "status": RAN},
        ]
        again = runner.resume(old["run_id"]).wait(timeout=30)
        assert again.status == "completed", again.error
        status = {tid: t.status for tid, t in again.tasks.items()}
        assert status["extract"] == status["transform"] == status["load"] == RAN
        assert status["join"] == RAN and status["optional"] == SKIPPED
        assert again.tasks["late_join"].attempts == 1, "a completed task never runs again"
