"""Hostile input and misuse that reach the engine: nesting depth, context keys, values
that change while converted, huge errors, foreign or read-only database files, the
private in-memory file, forks, nested runs on one runner, hooks, stubborn tasks."""

from __future__ import annotations

import enum
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cloacina import (
    CloacinaError,
    ConfigurationError,
    Runner,
    Workflow,
    task,
)
from helpers import query


def nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_values_nested_too_deep_are_refused_up_front_and_never_stored(runner):
    @task(id="deep_writer")
    def deep_writer(ctx):
        ctx["fine"] = nested(100)
        ctx["deep"] = {"inner": nested(150)}

    result = runner.run(Workflow("deep_wf", [deep_writer]))
    t = result.tasks["deep_writer"]
    assert t.status == "failed"
    assert "deep" in t.error and "100 levels" in t.error and "['inner']" in t.error, t.error
    with pytest.raises(TypeError, match=r"key 'x'.*100 levels"):
        runner.start(Workflow("deep_wf", [deep_writer]), {"x": nested(101)})

    @task(id="deep_ok")
    def deep_ok(ctx):
        return {"deepest": nested(100)}

    ok = runner.run(Workflow("deep_ok_wf", [deep_ok]), {"in": nested(100)})
    assert ok.status == "completed"
    assert ok.context["deepest"] == nested(100) and ok.context["in"] == nested(100)
    # Everything stored can be read back, and listing the runs works.
    assert len(runner.list_runs()) == 2
    assert runner.get_run(ok.run_id).context == ok.context


class Color(str, enum.Enum):
    RED = "red"


class Loud(str):
    def __str__(self) -> str:
        return "LOUD"


def test_top_level_keys_are_converted_as_strictly_as_nested_ones(runner):
    @task(id="key_writer")
    def key_writer(ctx):
        ctx[Color.RED] = 1
        ctx[Loud("quiet")] = 2
        return {"nested": {Color.RED: 3}}

    result = runner.run(Workflow("keys_wf", [key_writer]), {Color.RED: "in", Loud("k"): 0})
    assert result.status == "completed", result.error
    assert result.context == {"red": 1, "k": 0, "quiet": 2, "nested": {"red": 3}}

    @task(id="surrogate_key")
    def surrogate_key(ctx):
        ctx["bad\udce9key"] = 1

    bad = runner.run(Workflow("surrogate_wf", [surrogate_key]))
    assert bad.status == "failed"
    assert "surrogate" in bad.tasks["surrogate_key"].error
    with pytest.raises(TypeError, match="surrogate"):
        runner.start(Workflow("surrogate_wf", [surrogate_key]), {"x\udce9": 1})


def test_a_dict_changed_while_converted_is_an_error_not_a_panic(runner):
    inner: dict = {}

    class Sneaky(list):
        def __iter__(self):
            inner[f"added_{len(inner)}"] = 1  # changes the dict being converted
            return super().__iter__()

    inner.update({"a": Sneaky([1, 2]), "b": 2})

    @task(id="noop_conv")
    def noop_conv(ctx):
        return None

    wf = Workflow("conv_wf", [noop_conv])
    with pytest.raises(TypeError, match="changed size"):
        runner.start(wf, {"payload": inner})

    @task(id="sneaky_writer")
    def sneaky_writer(ctx):
        inner: dict = {}

        class Mutating(list):
            def __iter__(self):
                inner["more"] = 1
                return super().__iter__()

        inner.update({"a": Mutating([1]), "b": 1})
        return {"out": inner}

    result = runner.run(Workflow("sneaky_wf", [sneaky_writer]))
    t = result.tasks["sneaky_writer"]
    assert t.status == "failed" and "changed size" in t.error, t.error


def test_huge_error_messages_are_capped_when_stored(runner, rows):
    @task(id="shouts")
    def shouts(ctx):
        raise ValueError("x" * 5_000_000)

    result = runner.run(Workflow("shout_wf", [shouts]))
    t = result.tasks["shouts"]
    assert t.status == "failed"
    assert len(t.error) < 20_000 and "truncated" in t.error
    assert len(t.traceback) < 70_000 and "truncated" in t.traceback
    assert "raise ValueError" in t.traceback
    [row] = rows("SELECT length(error) AS e, length(traceback) AS t FROM run_tasks")
    assert row["e"] < 20_000 and row["t"] < 70_000
    assert len(result.error) < 20_000


def test_hook_errors_are_there_when_run_returns(runner):
    def failing_hook(task_id, ctx):
        time.sleep(0.05)
        raise RuntimeError("hook broke")

    @task(id="hooked", on_success=failing_hook)
    def hooked(ctx):
        return {"ok": True}

    wf = Workflow("hooked_wf", [hooked])
    for _ in range(5):
        result = runner.run(wf)
        assert result.status == "completed"
        errors = result.tasks["hooked"].hook_errors
        assert len(errors) == 1 and "hook broke" in errors[0]["error"], errors


@pytest.mark.sqlite_only("a SQLite file of another application")
def test_a_foreign_sqlite_file_is_refused_quickly_and_left_untouched(tmp_path):
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO runs (name) VALUES ('marathon')")
    before = path.read_bytes()
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="not a cloacina database") as info:
        Runner(f"sqlite:///{path}")
    assert time.monotonic() - started < 1.0
    assert str(path) in str(info.value) and "runs" in str(info.value)
    assert path.read_bytes() == before
    tables = {r["name"] for r in query(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"runs"}


@pytest.mark.sqlite_only("a SQLite file changed with sqlite3")
def test_a_file_from_a_newer_cloacina_is_refused(tmp_path):
    path = tmp_path / "newer.db"
    Runner(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, "
            "execution_time) VALUES (999, 'from the future', 1, x'00', 0)"
        )
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="newer version of cloacina"):
        Runner(f"sqlite:///{path}")
    assert time.monotonic() - started < 1.0


READ_ONLY_CHILD = """
import os, sys, sqlite3, _sqlite3
from cloacina import ConfigurationError, Runner
os.setgid(65534)
os.setuid(65534)  # from here on, the file and its directory are read-only for us
try:
    Runner("sqlite:///" + sys.argv[1])
except ConfigurationError as exc:
    print("REFUSED", exc)
else:
    print("OPENED")
"""


@pytest.mark.sqlite_only("file permissions")
@pytest.mark.skipif(os.geteuid() != 0, reason="drops to another user, which needs root")
def test_a_read_only_database_is_refused_at_runner():
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="cloacina-ro-"))
    shared.chmod(0o755)
    path = shared / "ro.db"
    Runner(f"sqlite:///{path}").close()
    path.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-c", READ_ONLY_CHILD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    shutil.rmtree(shared)
    assert "REFUSED" in proc.stdout, proc.stdout + proc.stderr
    assert str(path) in proc.stdout and "read-only" in proc.stdout
    assert "database error: database error" not in proc.stdout + proc.stderr


@pytest.mark.sqlite_only(":memory:'s private file")
def test_the_private_memory_file_is_private_and_leftovers_are_removed(tmp_path):
    crashed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from cloacina import Runner; r = Runner('sqlite::memory:'); "
            "print(os.getpid(), flush=True); os._exit(0)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    dead_pid = crashed.stdout.strip()
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"cloacina-{os.getuid()}"
    assert any(p.name.startswith(f"memory-{dead_pid}-") for p in base.iterdir())
    with Runner("sqlite::memory:") as runner:
        assert stat.S_IMODE(base.stat().st_mode) == 0o700
        mine = [p for p in base.iterdir() if p.name.startswith(f"memory-{os.getpid()}-")]
        assert mine, list(base.iterdir())
        for p in mine:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert not any(p.name.startswith(f"memory-{dead_pid}-") for p in base.iterdir())

        @task(id="in_memory")
        def in_memory(ctx):
            return {"x": 1}

        assert runner.run(Workflow("memory_wf", [in_memory])).status == "completed"
        for p in base.iterdir():
            if p.name.startswith(f"memory-{os.getpid()}-"):
                assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


FORK_CHILD = """
import os, sys
from cloacina import CloacinaError, Runner, Workflow, task

@task(id="forked_sync")
def forked_sync(ctx):
    return {"pid": os.getpid()}

@task(id="forked_async", dependencies=[forked_sync])
async def forked_async(ctx):
    return {"async": True}

wf = Workflow("fork_wf", [forked_async])
parent = Runner(sys.argv[1])
assert parent.run(wf).status == "completed"
pid = os.fork()
if pid == 0:
    try:
        parent.run(wf)
    except CloacinaError as exc:
        assert "forked child" in str(exc), exc
    else:
        os._exit(3)
    child = Runner(sys.argv[2])
    result = child.run(wf)
    import asyncio
    again = asyncio.run(child.run_async(wf))
    ok = result.status == again.status == "completed" and result.context["pid"] == os.getpid()
    child.close()
    os._exit(0 if ok else 4)
_, status = os.waitpid(pid, 0)
parent.close()
print("CHILD", os.waitstatus_to_exitcode(status))
"""


def test_a_forked_child_makes_its_own_runner(make_db_url):
    proc = subprocess.run(
        [sys.executable, "-c", FORK_CHILD, make_db_url("p"), make_db_url("c")],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    assert "CHILD 0" in proc.stdout, proc.stdout + proc.stderr


def test_a_task_may_run_another_workflow_on_its_own_runner_with_one_slot(db_url):
    @task(id="inner_step")
    def inner_step(ctx):
        return {"inner": ctx["n"] + 1}

    inner = Workflow("inner_wf", [inner_step])

    with Runner(db_url, max_concurrency=1) as runner:

        @task(id="outer_step")
        def outer_step(ctx):
            return {"outer": runner.run(inner, {"n": 1}).context["inner"]}

        @task(id="outer_async")
        async def outer_async(ctx):
            result = await runner.run_async(inner, {"n": 10})
            return {"outer_async": result.context["inner"]}

        result = runner.run(Workflow("outer_wf", [outer_step, outer_async]))
        assert result.status == "completed", result.error
        assert result.context == {"outer": 2, "outer_async": 11}

        @task(id="level_1")
        def level_1(ctx):
            return {"l1": runner.run(Workflow("l2_wf", [level_2])).context["l2"]}

        @task(id="level_2")
        def level_2(ctx):
            return {"l2": runner.run(inner, {"n": 100}).context["inner"]}

        deep = runner.run(Workflow("l1_wf", [level_1]))
        assert deep.status == "completed" and deep.context == {"l1": 101}


def test_close_inside_a_task_is_an_error_not_a_hang(db_url):
    with Runner(db_url) as runner:

        @task(id="closes_its_runner")
        def closes_its_runner(ctx):
            runner.close()

        @task(id="closes_async")
        async def closes_async(ctx):
            runner.close()

        for t in (closes_its_runner, closes_async):
            result = runner.run(Workflow(f"close_{t.id}", [t]))
            assert result.status == "failed"
            assert "CloacinaError" in result.tasks[t.id].error
            assert "close()" in result.tasks[t.id].error
        assert runner.run(Workflow("after_close_attempts", [closes_its_runner])).status == "failed"
    with pytest.raises(CloacinaError, match="closed"):
        runner.run(Workflow("after_close", [closes_its_runner]))


STUBBORN = """
import time
from cloacina import Runner, Workflow, task

@task(id="stubborn", timeout=0.2)
def stubborn(ctx):
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except Exception:
            pass
    return {"late": True}

with Runner(__import__("sys").argv[1]) as runner:
    result = runner.run(Workflow("stubborn_wf", [stubborn]))
    assert result.tasks["stubborn"].status == "failed", result.tasks["stubborn"]
    assert "TaskTimeout" in result.tasks["stubborn"].error
print("DONE")
"""


def test_a_timed_out_task_that_catches_exception_is_stopped_and_exit_is_clean(make_db_url):
    for i in range(3):
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", STUBBORN, make_db_url(f"s{i}")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert "DONE" in proc.stdout
        assert "Fatal Python error" not in proc.stderr
        # Stopped: the loop did not run its 3 s to the end.
        assert time.monotonic() - started < 2.8


def test_numpy_scalars_are_the_numbers_they_hold(runner):
    import numpy as np  # a test dependency: never skipped

    @task(id="numbers")
    def numbers(ctx):
        return {
            "i": np.int64(3),
            "b": np.bool_(True),
            "f32": np.float32(0.5),
            "u8": np.uint8(7),
            "list": [np.int32(1), np.float64(2.5)],
        }

    result = runner.run(Workflow("numpy_wf", [numbers]), {"n": np.int16(4)})
    assert result.status == "completed", result.error
    assert result.context == {
        "n": 4,
        "i": 3,
        "b": True,
        "f32": 0.5,
        "u8": 7,
        "list": [1, 2.5],
    }
    assert type(result.context["b"]) is bool

    @task(id="array")
    def array(ctx):
        return {"a": np.arange(3)}

    bad = runner.run(Workflow("array_wf", [array]))
    assert "tolist()" in bad.tasks["array"].error


@pytest.mark.parametrize(
    ("make", "hint"),
    [
        (lambda: __import__("datetime").datetime(2026, 1, 1), "isoformat()"),
        (lambda: __import__("decimal").Decimal("1.5"), "str(value)"),
        (lambda: {1, 2}, "sorted(value)"),
        (lambda: b"raw", "decode()"),
    ],
)
def test_non_json_values_say_what_to_store_instead(runner, make, hint):
    @task(id="odd_value")
    def odd_value(ctx):
        return {"v": make()}

    result = runner.run(Workflow("odd_wf", [odd_value]))
    error = result.tasks["odd_value"].error
    assert "'v'" in error and hint in error, error
