"""Database URLs, the default location, in-memory databases, durability and the schema."""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing

import cloacina
import pytest
from cloacina import ConfigurationError, Runner, Workflow, task
from helpers import query, wait_all


def small_workflow(name: str = "backend_wf") -> Workflow:
    @task
    def head(ctx):
        ctx["head"] = ctx.get("n", 0) + 1

    @task(dependencies=[head])
    def left_arm(ctx):
        ctx["left"] = ctx["head"] * 2

    @task(dependencies=[head])
    def right_arm(ctx):
        ctx["right"] = ctx["head"] * 3

    @task(dependencies=[left_arm, right_arm])
    def tail(ctx):
        return ctx["left"] + ctx["right"]

    return Workflow(name, [head, left_arm, right_arm, tail])


def expected(n: int = 0) -> dict:
    h = n + 1
    return {"n": n, "head": h, "left": 2 * h, "right": 3 * h, "tail": 5 * h}


# --- bad URLs -----------------------------------------------------------------------------


def test_unsupported_scheme_masks_the_password():
    url = "mysql://u:secret@h/db"
    with pytest.raises(ConfigurationError) as exc:
        Runner(url)
    msg = str(exc.value)
    assert "mysql" in msg
    assert "h/db" in msg
    assert "secret" not in msg
    assert "secret" not in repr(exc.value)


def test_garbage_url_is_named():
    with pytest.raises(ConfigurationError, match="nonsense"):
        Runner("nonsense")


def test_configuration_error_is_a_cloacina_error():
    with pytest.raises(cloacina.CloacinaError):
        Runner("nonsense")


@pytest.mark.sqlite_only("SQLite file paths")
def test_relative_path_in_missing_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as exc:
        Runner("sqlite:///nonexistent_dir/x/y.db")
    msg = str(exc.value)
    assert "nonexistent_dir" in msg
    assert not (tmp_path / "nonexistent_dir").exists()


@pytest.mark.sqlite_only("SQLite file paths")
def test_absolute_path_in_missing_directory(tmp_path):
    target = tmp_path / "missing" / "deeper" / "y.db"
    with pytest.raises(ConfigurationError) as exc:
        Runner("sqlite:///" + str(target))
    msg = str(exc.value)
    assert str(target.parent) in msg or str(target) in msg
    lowered = msg.lower()
    assert any(
        word in lowered
        for word in ("exist", "directory", "unreachable", "not found", "no such", "cannot")
    ), msg
    assert not target.parent.exists()


@pytest.mark.sqlite_only("a file of garbage bytes where the SQLite file should be")
def test_a_file_that_is_not_a_database_is_an_error(tmp_path):
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database, just some bytes " * 200)
    with pytest.raises(cloacina.CloacinaError), Runner("sqlite:///" + str(path)) as runner:
        runner.run(small_workflow("garbage_wf"), {})


# --- where the database lives -------------------------------------------------------------


def test_environment_variable_sets_the_default_url(db_url, rows, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CLOACINA_DATABASE_URL", db_url)

    with Runner() as runner:
        result = runner.run(small_workflow("env_wf"), {"n": 1})
    assert result.status == "completed"
    assert rows("SELECT run_id FROM runs") == [{"run_id": result.run_id}]
    assert not (work / "cloacina.db").exists()


@pytest.mark.sqlite_only("the default URL is a SQLite file")
def test_default_is_cloacina_db_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("CLOACINA_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)

    with Runner() as runner:
        result = runner.run(small_workflow("default_wf"), {"n": 2})
    assert result.status == "completed"
    assert result.context == expected(2)
    rows = query(tmp_path / "cloacina.db", "SELECT run_id, status FROM runs")
    assert rows == [{"run_id": result.run_id, "status": "completed"}]


@pytest.mark.sqlite_only("SQLite file paths")
def test_three_slashes_then_a_relative_path(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    with Runner("sqlite:///sub/rel.db") as runner:
        result = runner.run(small_workflow("relative_wf"), {})
    assert result.status == "completed"
    assert query(tmp_path / "sub" / "rel.db", "SELECT count(*) AS n FROM runs") == [{"n": 1}]


@pytest.mark.sqlite_only("SQLite file paths")
def test_four_slashes_is_an_absolute_path(tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    target = tmp_path / "abs.db"
    url = "sqlite:////" + str(target).lstrip("/")
    assert url.startswith("sqlite:////")
    with Runner(url) as runner:
        assert runner.run(small_workflow("absolute_wf"), {}).status == "completed"
    assert target.exists()
    assert os.listdir(elsewhere) == []


@pytest.mark.sqlite_only(":memory:")
@pytest.mark.parametrize("url", ["sqlite::memory:", "sqlite:///:memory:"])
def test_in_memory_database(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wf = small_workflow("memory_wf")
    with Runner(url, max_concurrency=4) as runner:
        result = runner.run(wf, {"n": 3})
        assert result.status == "completed", result.error
        assert result.context == expected(3)
        assert runner.get_run(result.run_id).context == expected(3)

        # Several runs at once, so several connections if the engine pools them.
        handles = [runner.start(wf, {"n": n}) for n in range(10)]
        results = wait_all(handles, timeout=60)
        assert [r.context for r in results] == [expected(n) for n in range(10)]
        assert len(runner.list_runs(workflow="memory_wf")) == 11
    assert os.listdir(tmp_path) == []


@pytest.mark.sqlite_only(":memory:")
def test_in_memory_databases_are_private_to_their_runner():
    with Runner("sqlite::memory:") as first, Runner("sqlite::memory:") as second:
        result = first.run(small_workflow("private_memory_wf"), {})
        assert result.status == "completed"
        assert second.get_run(result.run_id) is None
        assert second.list_runs() == []


# --- durability and schema ----------------------------------------------------------------


def test_runs_survive_closing_the_runner(db_url):
    with Runner(db_url) as runner:
        result = runner.run(small_workflow("durable_wf"), {"n": 5})
    with Runner(db_url) as reopened:
        again = reopened.get_run(result.run_id)
        assert again.status == "completed"
        assert again.context == expected(5)
        assert {t: r.status for t, r in again.tasks.items()} == dict.fromkeys(
            ["head", "left_arm", "right_arm", "tail"], "completed"
        )
        # The reopened runner keeps working on the same file.
        assert reopened.run(small_workflow("durable_wf"), {"n": 6}).context == expected(6)
        assert len(reopened.list_runs(workflow="durable_wf")) == 2


ATTEMPT_COLUMNS = {
    "run_id",
    "task_id",
    "attempt",
    "status",
    "started_at",
    "finished_at",
    "error",
    "traceback",
    "owner",
}


def columns_and_primary_key(backend: str, rows, table: str) -> tuple[set[str], list[str]]:
    """A table's (or view's) column names, and its primary key's columns in key order."""
    if backend == "sqlite":
        info = rows(f"PRAGMA table_info({table})")
        pk = [c["name"] for c in sorted(info, key=lambda c: c["pk"]) if c["pk"]]
        return {c["name"] for c in info}, pk
    names = rows(
        "SELECT column_name AS name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ?",
        table,
    )
    pk = rows(
        "SELECT k.column_name AS name FROM information_schema.table_constraints AS c "
        "JOIN information_schema.key_column_usage AS k ON k.constraint_schema = "
        "c.constraint_schema AND k.constraint_name = c.constraint_name "
        "WHERE c.constraint_type = 'PRIMARY KEY' AND c.table_schema = current_schema() "
        "AND c.table_name = ? ORDER BY k.ordinal_position",
        table,
    )
    return {c["name"] for c in names}, [c["name"] for c in pk]


def test_schema_has_the_documented_columns(runner, backend, rows):
    runner.run(small_workflow("schema_wf"), {})
    documented = {
        "runs": {
            "run_id",
            "workflow",
            "version",
            "status",
            "input",
            "error",
            "owner",
            "idempotency_key",
            "created_at",
            "started_at",
            "finished_at",
        },
        "run_tasks": {
            "run_id",
            "task_id",
            "position",
            "dependencies",
            "status",
            "attempts",
            "error",
            "traceback",
            "reason",
            "started_at",
            "finished_at",
        },
        "earlier_attempts": ATTEMPT_COLUMNS,
        "task_attempts": ATTEMPT_COLUMNS,
        "task_outputs": {"run_id", "task_id", "output"},
    }
    for table, columns in documented.items():
        names, pk = columns_and_primary_key(backend, rows, table)
        assert columns <= names, table
        expected_pk = {
            "runs": ["run_id"],
            "run_tasks": ["run_id", "task_id"],
            "earlier_attempts": ["run_id", "task_id", "attempt"],
            "task_attempts": [],  # a view
            "task_outputs": [],  # a view
        }[table]
        assert pk == expected_pk, table


@pytest.mark.sqlite_only("SQLite files written before migration 4")
def test_a_latest_attempt_also_in_earlier_attempts_shows_once(runner, db_path):
    """Files written before migration 4 recorded every attempt in a table: the latest
    one of each task is then in both `earlier_attempts` and its task row."""
    result = runner.run(small_workflow("legacy_wf"), {})
    with closing(sqlite3.connect(str(db_path), timeout=30)) as conn, conn:
        conn.execute(
            "INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at, "
            "finished_at, error, traceback) SELECT run_id, task_id, attempts, status, owner, "
            "started_at, finished_at, error, traceback FROM run_tasks WHERE run_id = ?",
            (result.run_id,),
        )
    again = runner.get_run(result.run_id)
    histories = {t: [a.attempt for a in r.history] for t, r in again.tasks.items()}
    assert histories == {t: [1] for t in ["head", "left_arm", "right_arm", "tail"]}
    assert again.tasks == result.tasks
    viewed = query(
        db_path, "SELECT task_id, attempt FROM task_attempts WHERE run_id = ?", (result.run_id,)
    )
    assert sorted((r["task_id"], r["attempt"]) for r in viewed) == [
        ("head", 1),
        ("left_arm", 1),
        ("right_arm", 1),
        ("tail", 1),
    ]


@pytest.mark.sqlite_only("SQLite files written before migration 4")
def test_a_file_from_before_migration_4_is_upgraded(tmp_path):
    """Migration 4 on a real file: before it, `task_attempts` was a table holding every
    attempt, the latest ones included, and finished task rows had no owner."""
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    calls = []

    @task(id="upgrade_flaky", retries=2, retry_delay=0)
    def flaky(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("first try")
        ctx["flaky"] = True

    @task(id="upgrade_broken", dependencies=[flaky])
    def broken(ctx):
        raise ValueError("bug")

    wf = Workflow("upgrade_wf", [flaky, broken])
    with Runner(url) as runner:
        first = runner.run(wf, {})
    assert first.status == "failed"
    # Take the file back to what the code before migration 4 wrote.
    with closing(sqlite3.connect(str(path))) as conn, conn:
        conn.execute("DROP VIEW task_attempts")
        conn.execute("ALTER TABLE earlier_attempts RENAME TO task_attempts")
        conn.execute(
            "INSERT INTO task_attempts (run_id, task_id, attempt, status, owner, started_at, "
            "finished_at, error, traceback) SELECT run_id, task_id, attempts, status, owner, "
            "started_at, finished_at, error, traceback FROM run_tasks "
            "WHERE status IN ('completed', 'failed')"
        )
        conn.execute("UPDATE run_tasks SET owner = NULL WHERE status IN ('completed', 'failed')")
        conn.execute("DELETE FROM _sqlx_migrations WHERE version = 4")

    @task(id="upgrade_broken", dependencies=[flaky])
    def fixed(ctx):
        ctx["fixed"] = True

    with Runner(url) as runner:
        assert runner.get_run(first.run_id).tasks == first.tasks
        second = runner.resume(first.run_id).wait(timeout=30)
    assert second.status == "completed", second
    statuses = {t: [(a.attempt, a.status) for a in r.history] for t, r in second.tasks.items()}
    assert statuses == {
        "upgrade_flaky": [(1, "failed"), (2, "completed")],
        "upgrade_broken": [(1, "failed"), (2, "completed")],
    }
    viewed = query(
        path,
        "SELECT task_id, attempt, status FROM task_attempts WHERE run_id = ? "
        "ORDER BY task_id, attempt",
        (first.run_id,),
    )
    assert [(r["task_id"], r["attempt"], r["status"]) for r in viewed] == [
        ("upgrade_broken", 1, "failed"),
        ("upgrade_broken", 2, "completed"),
        ("upgrade_flaky", 1, "failed"),
        ("upgrade_flaky", 2, "completed"),
    ]
    assert len(calls) == 2  # the completed task did not run again
