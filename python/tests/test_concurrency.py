"""Many runs at once, the concurrency limit, and sharing the SQLite file in one process."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing

import pytest
from cloacina import Runner, Workflow, task
from helpers import loads, query, wait_all


def five_task_workflow(name: str, pause: float = 0.0) -> Workflow:
    """a -> (b, c) -> d -> e, every value derived from the input n.

    Each task sleeps `pause` seconds first, to keep a batch of runs going for a while.
    """

    @task(id="c5_a")
    def a(ctx):
        time.sleep(pause)
        ctx["a"] = ctx["n"]

    @task(id="c5_b", dependencies=[a])
    def b(ctx):
        time.sleep(pause)
        ctx["b"] = ctx["a"] * 2

    @task(id="c5_c", dependencies=[a])
    def c(ctx):
        time.sleep(pause)
        return {"c": ctx["a"] + 1}

    @task(id="c5_d", dependencies=[b, c])
    def d(ctx):
        time.sleep(pause)
        return ctx["b"] + ctx["c"]

    @task(id="c5_e", dependencies=[d])
    def e(ctx):
        time.sleep(pause)
        ctx["e"] = ctx["c5_d"] * 10

    return Workflow(name, [a, b, c, d, e])


def expected_outputs(n: int) -> dict[str, dict]:
    return {
        "c5_a": {"a": n},
        "c5_b": {"b": 2 * n},
        "c5_c": {"c": n + 1},
        "c5_d": {"c5_d": 3 * n + 1},
        "c5_e": {"e": 10 * (3 * n + 1)},
    }


def expected_context(n: int) -> dict:
    out = {"n": n}
    for delta in expected_outputs(n).values():
        out.update(delta)
    return out


def check_all_rows(rows, workflow: str, count: int) -> None:
    runs = rows("SELECT run_id, status, input FROM runs WHERE workflow = ?", workflow)
    assert len(runs) == count
    assert {r["status"] for r in runs} == {"completed"}
    n_of = {r["run_id"]: loads(r["input"])["n"] for r in runs}

    tasks = rows(
        "SELECT t.run_id, t.task_id, t.status, t.attempts, o.output FROM run_tasks t "
        "JOIN runs r ON r.run_id = t.run_id "
        "LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_id = t.task_id "
        "WHERE r.workflow = ?",
        workflow,
    )
    assert len(tasks) == 5 * count
    for row in tasks:
        assert row["status"] == "completed", row
        assert row["attempts"] == 1, row
        assert loads(row["output"]) == expected_outputs(n_of[row["run_id"]])[row["task_id"]], row


def integrity_ok(db_path) -> None:
    with closing(sqlite3.connect(str(db_path), timeout=30)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_200_concurrent_runs(runner, rows, backend, request):
    wf = five_task_workflow("two_hundred_wf")
    handles = [runner.start(wf, {"n": n}) for n in range(200)]
    assert len({h.run_id for h in handles}) == 200

    results = wait_all(handles, timeout=100)
    for n, result in enumerate(results):
        assert result.status == "completed", (n, result.error)
        assert result.context == expected_context(n)

    check_all_rows(rows, "two_hundred_wf", 200)
    if backend == "sqlite":  # PostgreSQL has no PRAGMA integrity_check
        integrity_ok(request.getfixturevalue("db_path"))


def _peak_concurrency(db_url: str, limit: int, tasks: int) -> int:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def make(i):
        def body(ctx):
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
            time.sleep(0.2)
            with lock:
                state["now"] -= 1

        return task(id=f"peak_{i}")(body)

    wf = Workflow("peak_wf", [make(i) for i in range(tasks)])
    with Runner(db_url, max_concurrency=limit) as runner:
        result = runner.run(wf, {})
    assert result.status == "completed", result.error
    return state["peak"]


@pytest.mark.parametrize("limit", [1, 2])
def test_max_concurrency_is_respected(db_url, limit):
    assert _peak_concurrency(db_url, limit, tasks=6) == limit


def test_max_concurrency_holds_across_runs(db_url):
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    @task
    def counted(ctx):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1

    wf = Workflow("peak_runs_wf", [counted])
    with Runner(db_url, max_concurrency=2) as runner:
        results = wait_all([runner.start(wf, {"i": i}) for i in range(8)], timeout=60)
    assert all(r.status == "completed" for r in results)
    assert state["peak"] <= 2


@pytest.mark.sqlite_only("Python's sqlite3 reading the file in the engine's process")
def test_python_sqlite3_shares_the_file_while_runs_execute(runner, db_path):
    wf = five_task_workflow("shared_file_wf", pause=0.005)
    assert runner.run(wf, {"n": -1}).status == "completed"  # the schema exists from here on

    done = threading.Event()
    errors: list[BaseException] = []
    counts: list[int] = []
    during_runs = 0

    def reader():
        nonlocal during_runs
        try:
            while not done.is_set() or len(counts) < 300:
                going = not done.is_set()
                with closing(sqlite3.connect(str(db_path), timeout=30)) as conn:
                    counts.append(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
                during_runs += going and not done.is_set()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader, name="sqlite3-reader")
    thread.start()
    try:
        handles = [runner.start(wf, {"n": n}) for n in range(200)]
        results = wait_all(handles, timeout=100)
    finally:
        done.set()
        thread.join(60)
    assert not thread.is_alive()

    assert errors == []
    assert len(counts) >= 300
    assert during_runs > 0, "no read overlapped the runs"
    assert counts == sorted(counts), "the count of runs went down"
    assert max(counts) <= 201
    assert query(db_path, "SELECT count(*) AS n FROM runs") == [{"n": 201}]
    assert [r.status for r in results] == ["completed"] * 200
    assert all(r.context == expected_context(n) for n, r in enumerate(results))
    integrity_ok(db_path)


@pytest.mark.sqlite_only("Python's sqlite3 writing the file in the engine's process")
def test_user_table_written_with_sqlite3_while_runs_execute(runner, db_path, rows):
    wf = five_task_workflow("notes_wf", pause=0.005)
    assert runner.run(wf, {"n": 0}).status == "completed"

    with closing(sqlite3.connect(str(db_path), timeout=30)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        conn.commit()

    errors: list[BaseException] = []
    batch_done = threading.Event()
    during_runs = 0

    def writer():
        nonlocal during_runs
        try:
            for i in range(200):
                with closing(sqlite3.connect(str(db_path), timeout=30)) as conn:
                    with conn:  # one transaction per note
                        conn.execute("INSERT INTO notes (body) VALUES (?)", (f"note {i}",))
                during_runs += not batch_done.is_set()
        except BaseException as exc:
            errors.append(exc)

    handles = [runner.start(wf, {"n": n}) for n in range(1, 51)]
    thread = threading.Thread(target=writer, name="sqlite3-writer")
    thread.start()
    try:
        results = wait_all(handles, timeout=100)
    finally:
        batch_done.set()
        thread.join(100)
    assert not thread.is_alive()

    assert errors == []
    assert during_runs > 0, "no write overlapped the runs"
    assert all(r.status == "completed" for r in results)
    notes = query(db_path, "SELECT body FROM notes ORDER BY id")
    assert [n["body"] for n in notes] == [f"note {i}" for i in range(200)]
    check_all_rows(rows, "notes_wf", 51)
    integrity_ok(db_path)

    # The engine still opens the file with the user's table in it.
    runner.close()
    with Runner("sqlite:///" + str(db_path)) as again:
        assert again.get_run(results[0].run_id).status == "completed"
        assert len(again.list_runs(workflow="notes_wf", limit=100)) == 51
