"""Running workflows: results, the rows they leave, handles, and reading runs back."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from datetime import timedelta

import pytest
from cloacina import (
    Attempt,
    CloacinaError,
    Runner,
    RunResult,
    RunSummary,
    TaskResult,
    Workflow,
    task,
)
from helpers import (
    assert_utc,
    eventually,
    intervals_overlap,
    loads,
    micros_to_datetime,
    run_script,
)

MS = timedelta(milliseconds=1)


def etl_workflow(name: str = "etl") -> Workflow:
    @task
    def extract(ctx):
        ctx["rows"] = [1, 2, 3]

    @task(id="sum_rows", dependencies=[extract])
    def transform(ctx):
        return {"total": sum(ctx["rows"])}

    @task(dependencies=["sum_rows"])
    def load(ctx):
        return f"{ctx['source']}:{ctx['total']}"

    return Workflow(name, [extract, transform, load], description="extract, sum, load")


# --- a linear chain, end to end -----------------------------------------------------------


def test_linear_chain_values_flow(runner):
    result = runner.run(etl_workflow(), {"source": "a.csv"})
    assert isinstance(result, RunResult)
    assert result.status == "completed"
    assert result.error is None
    assert result.workflow == "etl"
    assert result.context == {"source": "a.csv", "rows": [1, 2, 3], "total": 6, "load": "a.csv:6"}
    assert result.raise_for_status() is result


def test_linear_chain_task_results(runner):
    result = runner.run(etl_workflow(), {"source": "a.csv"})
    assert set(result.tasks) == {"extract", "sum_rows", "load"}
    for tid, tr in result.tasks.items():
        assert isinstance(tr, TaskResult)
        assert tr.status == "completed", tid
        assert tr.attempts == 1
        assert tr.error is None
        assert tr.traceback is None
        assert_utc(tr.started_at)
        assert_utc(tr.finished_at)
        assert tr.started_at <= tr.finished_at
        assert isinstance(tr.duration, timedelta)
        assert abs(tr.duration - (tr.finished_at - tr.started_at)) <= MS
        assert result.started_at <= tr.started_at and tr.finished_at <= result.finished_at
    # Each task starts after its dependency finished.
    t = result.tasks
    assert t["extract"].finished_at <= t["sum_rows"].started_at
    assert t["sum_rows"].finished_at <= t["load"].started_at


def test_run_result_times(runner):
    result = runner.run(etl_workflow(), {"source": "a.csv"})
    assert isinstance(result.run_id, str) and result.run_id
    assert_utc(result.started_at)
    assert_utc(result.finished_at)
    assert result.started_at <= result.finished_at
    assert abs(result.duration - (result.finished_at - result.started_at)) <= MS


def test_linear_chain_rows(runner, rows):
    wf = etl_workflow()
    before_us = int(time.time() * 1_000_000)
    result = runner.run(wf, {"source": "a.csv"})
    after_us = int(time.time() * 1_000_000)

    [run] = rows("SELECT * FROM runs WHERE run_id = ?", result.run_id)
    assert run["workflow"] == "etl"
    assert run["version"] == wf.version
    assert run["status"] == "completed"
    assert loads(run["input"]) == {"source": "a.csv"}
    assert run["error"] is None
    for col in ("created_at", "started_at", "finished_at"):
        assert isinstance(run[col], int), col
        # Microseconds since the epoch, taken during this run (one second of slack).
        assert before_us - 1_000_000 <= run[col] <= after_us + 1_000_000, col
    assert run["created_at"] <= run["started_at"] <= run["finished_at"]
    assert abs(micros_to_datetime(run["started_at"]) - result.started_at) <= MS
    assert abs(micros_to_datetime(run["finished_at"]) - result.finished_at) <= MS

    task_rows = rows("SELECT * FROM run_tasks WHERE run_id = ? ORDER BY position", result.run_id)
    assert [r["task_id"] for r in task_rows] == wf.topological_order()
    assert [r["position"] for r in task_rows] == [0, 1, 2]
    deps = {r["task_id"]: sorted(loads(r["dependencies"])) for r in task_rows}
    assert deps == {"extract": [], "sum_rows": ["extract"], "load": ["sum_rows"]}
    outputs = {
        r["task_id"]: loads(r["output"])
        for r in rows("SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id)
    }
    assert outputs == {
        "extract": {"rows": [1, 2, 3]},
        "sum_rows": {"total": 6},
        "load": {"load": "a.csv:6"},
    }
    for r in task_rows:
        assert r["status"] == "completed"
        assert r["attempts"] == 1
        assert r["error"] is None and r["traceback"] is None
        assert r["started_at"] <= r["finished_at"]
    by_id = {r["task_id"]: r for r in task_rows}
    assert by_id["extract"]["finished_at"] <= by_id["sum_rows"]["started_at"]
    assert by_id["sum_rows"]["finished_at"] <= by_id["load"]["started_at"]

    attempts = rows("SELECT * FROM task_attempts WHERE run_id = ? ORDER BY task_id", result.run_id)
    assert [(a["task_id"], a["attempt"], a["status"]) for a in attempts] == [
        ("extract", 1, "completed"),
        ("load", 1, "completed"),
        ("sum_rows", 1, "completed"),
    ]
    for a in attempts:
        assert a["error"] is None
        assert a["started_at"] <= a["finished_at"]


# --- shapes -------------------------------------------------------------------------------


def test_diamond(runner, rows):
    @task
    def root(ctx):
        ctx["n"] = ctx["seed"] * 10

    @task(dependencies=[root])
    def left(ctx):
        ctx["left"] = ctx["n"] + 1

    @task(dependencies=[root])
    def right(ctx):
        ctx["right"] = ctx["n"] + 2

    @task(dependencies=[left, right])
    def join(ctx):
        return {"sum": ctx["left"] + ctx["right"]}

    result = runner.run(Workflow("diamond_wf", [root, left, right, join]), {"seed": 1})
    assert result.status == "completed"
    assert result.context == {"seed": 1, "n": 10, "left": 11, "right": 12, "sum": 23}

    times = {
        r["task_id"]: (r["started_at"], r["finished_at"])
        for r in rows("SELECT * FROM run_tasks WHERE run_id = ?", result.run_id)
    }
    for branch in ("left", "right"):
        assert times["root"][1] <= times[branch][0]
        assert times[branch][1] <= times["join"][0]


def test_fan_out_fan_in_branches_overlap(runner, rows):
    @task
    def split(ctx):
        ctx["parts"] = 2

    @task(dependencies=[split])
    def slow_a(ctx):
        time.sleep(0.5)
        ctx["a"] = "done"

    @task(dependencies=[split])
    def slow_b(ctx):
        time.sleep(0.5)
        ctx["b"] = "done"

    @task(dependencies=[slow_a, slow_b])
    def gather(ctx):
        ctx["gathered"] = [ctx["a"], ctx["b"], ctx["parts"]]

    result = runner.run(Workflow("fan_wf", [split, slow_a, slow_b, gather]), {})
    assert result.status == "completed"
    assert result.context["gathered"] == ["done", "done", 2]

    ta, tb = result.tasks["slow_a"], result.tasks["slow_b"]
    assert max(ta.started_at, tb.started_at) < min(ta.finished_at, tb.finished_at)

    times = {
        r["task_id"]: (r["started_at"], r["finished_at"])
        for r in rows("SELECT * FROM run_tasks WHERE run_id = ?", result.run_id)
    }
    assert intervals_overlap(times["slow_a"], times["slow_b"]), times


def test_run_without_input(runner):
    @task
    def lone(ctx):
        return "ran"

    result = runner.run(Workflow("no_input_wf", [lone]))
    assert result.status == "completed"
    assert result.context == {"lone": "ran"}


# --- start / handle -----------------------------------------------------------------------


def blocking_workflow(started: threading.Event, release: threading.Event) -> Workflow:
    @task
    def blocker(ctx):
        started.set()
        if not release.wait(20):
            raise RuntimeError("never released")
        ctx["blocked"] = True

    @task(dependencies=[blocker])
    def after(ctx):
        ctx["after"] = True

    return Workflow("blocking_wf", [blocker, after])


def test_start_returns_at_once_and_wait_returns_the_result(runner):
    started, release = threading.Event(), threading.Event()
    handle = runner.start(blocking_workflow(started, release), {"k": 1})
    # start() came back while the task is still blocked.
    assert isinstance(handle.run_id, str) and handle.run_id
    assert handle.status() in ("pending", "running")
    release.set()

    result = handle.wait(timeout=60)
    assert isinstance(result, RunResult)
    assert result.run_id == handle.run_id
    assert result.status == "completed"
    assert result.context == {"k": 1, "blocked": True, "after": True}
    assert handle.status() == "completed"


def test_handle_status_of_a_purged_run_names_the_run(runner):
    release = threading.Event()
    handle = runner.start(blocking_workflow(threading.Event(), release), {})
    handle.cancel()
    release.set()
    assert handle.wait(timeout=60).status == "cancelled"
    assert handle.status() == "cancelled"
    assert runner.purge(older_than=timedelta(0)) == 1
    with pytest.raises(CloacinaError, match=handle.run_id):
        handle.status()


def test_wait_with_timeout_raises_timeout_error(runner):
    started, release = threading.Event(), threading.Event()
    handle = runner.start(blocking_workflow(started, release), {})
    try:
        assert started.wait(30)
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.2)
    finally:
        release.set()
    assert handle.wait(timeout=60).status == "completed"


def test_wait_with_zero_timeout_on_a_finished_run_returns_it(runner):
    # A zero timeout still looks once: a run already final is returned, not a timeout.
    started, release = threading.Event(), threading.Event()
    handle = runner.start(blocking_workflow(started, release), {})
    try:
        assert started.wait(30)
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0)
    finally:
        release.set()
    assert handle.wait(timeout=60).status == "completed"
    assert handle.wait(timeout=0).status == "completed"


def test_zero_timeout_waits_that_stop_a_database_read_midway_are_clean(runner):
    """A wait that gives up (here: a zero timeout) drops the store read it had begun; on
    PostgreSQL that read holds a pooled connection, whose return to the pool needs the
    runtime. It used to panic ("requires a Tokio context") when dropped outside it."""

    @task(id="zero_wait")
    def zero_wait(ctx):
        ctx["x"] = 1

    handle = runner.start(Workflow("zero_wait_wf", [zero_wait]), {})
    assert handle.wait(timeout=60).status == "completed"
    outcomes = set()
    for _ in range(300):
        try:
            outcomes.add(handle.wait(timeout=0).status)
        except TimeoutError:
            outcomes.add("timeout")
    assert outcomes <= {"completed", "timeout"}, outcomes


def test_a_run_in_progress_is_visible(runner):
    started, release = threading.Event(), threading.Event()
    handle = runner.start(blocking_workflow(started, release), {})
    try:
        assert started.wait(30)
        # The task body is running; its state may reach the database a moment later.
        live = eventually(
            lambda: runner.get_run(handle.run_id),
            lambda r: r.tasks["blocker"].status == "running",
        )
        assert handle.status() == "running"
        assert live.status == "running"
        assert live.finished_at is None
        assert live.tasks["blocker"].status == "running"
        assert live.tasks["blocker"].finished_at is None
        assert live.tasks["after"].status == "pending"
        assert live.tasks["after"].started_at is None
        assert handle.run_id in [r.run_id for r in runner.list_runs(status="running")]
    finally:
        release.set()
    assert handle.wait(timeout=60).status == "completed"


# --- reading runs back --------------------------------------------------------------------


def test_get_run_returns_the_same_result(runner):
    result = runner.run(etl_workflow(), {"source": "b.csv"})
    again = runner.get_run(result.run_id)
    assert isinstance(again, RunResult)
    assert again.run_id == result.run_id
    assert again.workflow == "etl"
    assert again.status == "completed"
    assert again.context == result.context
    assert {k: (v.status, v.attempts) for k, v in again.tasks.items()} == {
        k: (v.status, v.attempts) for k, v in result.tasks.items()
    }
    assert abs(again.started_at - result.started_at) <= MS
    assert abs(again.finished_at - result.finished_at) <= MS


def test_results_are_ordinary_frozen_dataclasses(runner):
    """Results are built without their generated __init__ (for speed): they must still
    hold every field and behave like instances that __init__ built."""
    result = runner.run(etl_workflow(), {"source": "c.csv"})
    for tr in result.tasks.values():
        for obj, cls in [(tr, TaskResult)] + [(a, Attempt) for a in tr.history]:
            assert isinstance(obj, cls)
            names = [f.name for f in dataclasses.fields(cls)]
            assert list(vars(obj)) == names
            rebuilt = cls(**{n: getattr(obj, n) for n in names})
            assert rebuilt == obj and repr(rebuilt) == repr(obj)
            with pytest.raises(dataclasses.FrozenInstanceError):
                obj.status = "failed"  # type: ignore[misc]
        [latest] = tr.history
        assert (latest.started_at, latest.finished_at) == (tr.started_at, tr.finished_at)
        assert latest.duration == tr.duration
    copy = dataclasses.replace(result.tasks["load"], status="failed")
    assert copy.status == "failed" and result.tasks["load"].status == "completed"
    assert dataclasses.asdict(result)["tasks"]["load"]["history"][0]["attempt"] == 1


def test_get_run_of_unknown_id_is_none(runner):
    assert runner.get_run("no-such-run") is None


def test_list_runs_newest_first_filters_and_limit(runner):
    @task
    def ok_task(ctx):
        pass

    @task
    def failing_task(ctx):
        raise ValueError("nope")

    ok_wf = Workflow("list_ok_wf", [ok_task])
    bad_wf = Workflow("list_bad_wf", [failing_task])
    ids = []
    for wf in (ok_wf, bad_wf, ok_wf, ok_wf, bad_wf):
        ids.append(runner.run(wf, {}).run_id)
    newest_first = ids[::-1]

    listed = runner.list_runs()
    assert all(isinstance(r, RunSummary) for r in listed)
    # The whole run is read when asked for, and equals what get_run returns.
    assert listed[0].result() == runner.get_run(ids[4])
    assert listed[0].task_counts == {"failed": 1} and listed[1].task_counts == {"completed": 1}
    assert "nope" in listed[0].tasks["failing_task"].error
    assert [r.run_id for r in listed] == newest_first
    assert [r.run_id for r in runner.list_runs(workflow="list_ok_wf")] == [ids[3], ids[2], ids[0]]
    assert [r.run_id for r in runner.list_runs(status="failed")] == [ids[4], ids[1]]
    assert [r.run_id for r in runner.list_runs(workflow="list_bad_wf", status="completed")] == []
    assert [r.run_id for r in runner.list_runs(limit=2)] == newest_first[:2]
    assert runner.list_runs(workflow="never_ran_wf") == []


def test_list_runs_default_limit_is_50(runner):
    @task
    def tiny(ctx):
        pass

    wf = Workflow("many_runs_wf", [tiny])
    handles = [runner.start(wf, {"i": i}) for i in range(55)]
    for h in handles:
        assert h.wait(timeout=60).status == "completed"
    assert len(runner.list_runs()) == 50
    assert len(runner.list_runs(limit=100)) == 55


def test_second_runner_on_the_same_file_reads_runs(runner, db_url):
    result = runner.run(etl_workflow("etl_shared"), {"source": "c.csv"})
    with Runner(db_url) as other:
        seen = other.get_run(result.run_id)
        assert seen is not None
        assert seen.status == "completed"
        assert seen.context == result.context
        assert [r.run_id for r in other.list_runs(workflow="etl_shared")] == [result.run_id]


def test_subprocess_reads_a_run_from_the_same_file(runner, db_url, tmp_path):
    result = runner.run(etl_workflow("etl_for_child"), {"source": "d.csv"})
    proc = run_script("read_run.py", db_url, result.run_id, cwd=tmp_path)
    seen = json.loads(proc.stdout)
    assert seen["found"] is True
    assert seen["run_id"] == result.run_id
    assert seen["workflow"] == "etl_for_child"
    assert seen["status"] == "completed"
    assert seen["context"] == result.context
    assert seen["tasks"] == {
        tid: {"status": "completed", "attempts": 1, "error": None}
        for tid in ("extract", "sum_rows", "load")
    }
    assert seen["listed"] == [result.run_id]


def test_parent_reads_a_run_made_by_a_subprocess(runner, db_url, tmp_path):
    proc = run_script("run_workflow.py", db_url, json.dumps({"n": 4}), cwd=tmp_path)
    child = json.loads(proc.stdout)
    assert child["status"] == "completed"
    assert child["context"] == {"n": 4, "base": 5, "double": 10, "describe": "4 -> 10"}

    seen = runner.get_run(child["run_id"])
    assert seen is not None
    assert seen.workflow == "subprocess_wf"
    assert seen.status == "completed"
    assert seen.context == child["context"]
    assert set(seen.tasks) == {"base", "double", "describe"}


# --- quiet by default, logging when asked -------------------------------------------------


def test_successful_run_prints_nothing(db_url, capfd, caplog):
    @task
    def quiet(ctx):
        ctx["q"] = 1

    with Runner(db_url) as r:
        result = r.run(Workflow("quiet_inline_wf", [quiet]), {})
    assert result.status == "completed"
    out, err = capfd.readouterr()
    assert out == ""
    assert err == ""
    noisy = [
        rec
        for rec in caplog.records
        if rec.name.startswith("cloacina") and rec.levelno >= logging.WARNING
    ]
    assert noisy == []


def test_successful_run_in_a_fresh_process_prints_nothing(db_url, tmp_path):
    proc = run_script("quiet_run.py", db_url, cwd=tmp_path)
    assert proc.stdout == ""
    assert proc.stderr == ""


def test_a_program_without_async_tasks_never_imports_asyncio(db_url, tmp_path):
    # asyncio costs tens of milliseconds to import: it is loaded when the first async
    # task runs, not by `import cloacina` or a Runner.
    proc = run_script("sync_only_run.py", db_url, cwd=tmp_path)
    assert proc.stdout.split() == ["before=False", "after=True"], proc.stdout


@pytest.mark.parametrize("how", ["close", "atexit"])
def test_the_process_exits_cleanly_right_after_its_runs_end(make_db_url, tmp_path, how):
    # Closing waits until no engine thread is still running Python (the tail of an
    # attempt, a hook): one still in Python when the interpreter finalizes is killed
    # inside Rust code and the process aborts. A race (before the fix it showed in a
    # few percent of runs), so try several times.
    for i in range(8):
        proc = run_script("exit_right_after.py", make_db_url(f"exit_{how}_{i}"), how, cwd=tmp_path)
        assert proc.stderr == "", proc.stderr


def test_engine_logs_under_the_cloacina_logger(db_url, tmp_path):
    proc = run_script("logged_run.py", db_url, cwd=tmp_path)
    loggers = {line.split("|")[1] for line in proc.stderr.splitlines() if line.startswith("LOG|")}
    ours = {n for n in loggers if n == "cloacina" or n.startswith("cloacina.")}
    assert ours, proc.stderr
    # Nothing from the engine's dependencies leaks out under other names
    # (asyncio's own debug message about its selector is the standard library's).
    assert loggers - ours <= {"asyncio"}, proc.stderr


# --- lifecycle ----------------------------------------------------------------------------


def test_runner_as_context_manager_and_idempotent_close(db_url):
    with Runner(db_url) as r:
        assert isinstance(r, Runner)
        assert r.run(etl_workflow(), {"source": "e.csv"}).status == "completed"
    r.close()
    r.close()


@pytest.mark.sqlite_only("SQLite's WAL and shm files")
def test_close_returns_once_the_file_is_closed(tmp_path):
    # When close() returns, every connection to the file is closed: SQLite has
    # checkpointed and removed the WAL, and the files may be moved or deleted.
    db = tmp_path / "closed.db"
    for _ in range(5):
        r = Runner(f"sqlite:///{db}")
        assert r.run(etl_workflow(), {"source": "c.csv"}).status == "completed"
        r.close()
        assert not (tmp_path / "closed.db-wal").exists()
        assert not (tmp_path / "closed.db-shm").exists()


def test_a_closed_runner_refuses_work(db_url):
    r = Runner(db_url)
    r.close()
    with pytest.raises(CloacinaError):
        r.run(etl_workflow(), {"source": "f.csv"})
