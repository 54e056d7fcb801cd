"""Hostile input and misuse at the Python boundary: durations the engine cannot hold,
mistyped Runner options, passwords in URLs, pickling, and exception texts that are not
valid UTF-8. Each is refused (or made safe) in Python, before it reaches the engine."""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pickled_tasks
import pytest
from cloacina import ConfigurationError, DatabaseError, Retry, Runner, Skip, Workflow, task

HOSTILE_SECONDS = [float("nan"), float("inf"), float("-inf"), -1, -0.5, 1e20, 1e300, 10**400]


def one_task_workflow(name: str) -> Workflow:
    @task(id=f"{name}_only")
    def only(ctx):
        ctx["done"] = True

    return Workflow(name, [only])


# --- 1. durations: one validation, before the engine ----------------------------------------


@pytest.mark.parametrize("option", ["retry_delay", "max_retry_delay", "timeout"])
@pytest.mark.parametrize("value", HOSTILE_SECONDS)
def test_task_durations_out_of_range_are_refused(option, value):
    with pytest.raises(ValueError) as exc:

        @task(id="hostile_duration", **{option: value})
        def hostile_duration(ctx):
            pass

    message = str(exc.value)
    assert f"task 'hostile_duration': {option} must be a finite number of seconds" in message
    assert "1e9" in message


@pytest.mark.parametrize("option", ["retry_delay", "max_retry_delay", "timeout"])
@pytest.mark.parametrize("value", ["5", True, [1]])
def test_task_durations_of_the_wrong_type_are_type_errors(option, value):
    with pytest.raises(TypeError, match=f"task 'mistyped_duration': {option} must be a number"):
        task(id="mistyped_duration", **{option: value})(lambda ctx: None)


def test_task_timeout_must_be_more_than_zero():
    with pytest.raises(
        ValueError,
        match="task 'zero_timeout': timeout must be a finite number of seconds more than 0",
    ):
        task(id="zero_timeout", timeout=0)(lambda ctx: None)


def test_durations_up_to_1e9_seconds_work_and_beyond_are_refused(runner):
    @task(id="long_limits", retry_delay=1e9, max_retry_delay=1e9, timeout=1e9)
    def long_limits(ctx):
        ctx["ok"] = True

    assert long_limits.options["timeout"] == 1e9
    wf = Workflow("long_limits_wf", [long_limits], timeout=10**9)
    assert wf.timeout == 1e9
    assert Retry(delay=10**9).delay == 1e9
    handle = runner.start(wf)
    assert handle.wait(1e9).status == "completed"

    just_over = 1e9 + 1
    with pytest.raises(ValueError, match="task 'long_limits': timeout"):
        task(id="long_limits", timeout=just_over)(long_limits.fn)
    with pytest.raises(ValueError, match="workflow 'long_limits_wf': timeout"):
        Workflow("long_limits_wf", [long_limits], timeout=just_over)
    with pytest.raises(ValueError, match="Retry delay"):
        Retry(delay=just_over)
    with pytest.raises(ValueError, match="wait timeout"):
        handle.wait(just_over)


@pytest.mark.parametrize("value", [*HOSTILE_SECONDS, 0])
def test_workflow_timeout_out_of_range_is_refused(value):
    with pytest.raises(
        ValueError,
        match="workflow 'hostile_wf_timeout': timeout must be a finite number of seconds more",
    ):
        Workflow(
            "hostile_wf_timeout", [one_task_workflow("hostile_wf_inner").tasks[0]], timeout=value
        )


@pytest.mark.parametrize("value", HOSTILE_SECONDS)
def test_retry_delay_out_of_range_is_refused_at_construction(value):
    with pytest.raises(ValueError, match="Retry delay must be a finite number of seconds"):
        Retry(delay=value)
    with pytest.raises(TypeError, match="Retry delay must be a number"):
        Retry(delay="1")


def test_a_task_raising_retry_with_nan_fails_its_attempt_not_the_engine(runner):
    calls = []

    @task(id="nan_retry", retries=1, retry_delay=0)
    def nan_retry(ctx):
        calls.append(1)
        if len(calls) == 1:
            raise Retry("again", delay=float("nan"))
        ctx["second"] = True

    result = runner.run(Workflow("nan_retry_wf", [nan_retry]))
    assert result.status == "completed", result.error
    history = result.tasks["nan_retry"].history
    assert [a.status for a in history] == ["failed", "completed"]
    assert history[0].error.startswith("ValueError: Retry delay must be a finite number")
    # The engine is unharmed: another run goes through.
    assert runner.run(one_task_workflow("after_nan_retry_wf")).status == "completed"


def test_a_retry_delay_changed_after_construction_is_checked_too(runner):
    calls = []

    @task(id="mutated_retry", retries=1, retry_delay=0)
    def mutated_retry(ctx):
        calls.append(1)
        if len(calls) == 1:
            exc = Retry("again", delay=1)
            exc.delay = 1e300
            raise exc
        ctx["second"] = True

    result = runner.run(Workflow("mutated_retry_wf", [mutated_retry]))
    assert result.status == "completed", result.error
    first = result.tasks["mutated_retry"].history[0]
    assert first.error.startswith("Retry: again (Retry delay must be a finite number")
    assert "raise exc" in first.traceback


@pytest.mark.parametrize("value", [*HOSTILE_SECONDS, 0, 0.5])
def test_runner_lease_out_of_range_is_refused_before_opening(value, db_url, db_exists):
    with pytest.raises(ValueError, match="lease must be a finite number of seconds between 1"):
        Runner(db_url, lease=value)
    assert not db_exists()


def test_runner_lease_of_one_second_is_the_least(db_url, db_exists):
    with pytest.raises(ValueError, match="lease must be a finite number of seconds between 1"):
        Runner(db_url, lease=0.999)
    assert not db_exists()
    with Runner(db_url, lease=1) as runner:
        assert runner.run(one_task_workflow("lease_one_wf")).status == "completed"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, 1e20, 1e300])
def test_wait_timeout_out_of_range_is_refused(value, runner):
    handle = runner.start(one_task_workflow("hostile_wait_wf"))
    with pytest.raises(ValueError, match="wait timeout must be a finite number of seconds"):
        handle.wait(value)
    with pytest.raises(TypeError, match="wait timeout must be a number"):
        handle.wait("10")
    assert handle.wait(30).status == "completed"


# --- 2. Runner options: types -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"recover": "no"}, "recover must be a bool"),
        ({"recover": 0}, "recover must be a bool"),
        ({"lease": "30"}, "lease must be a number"),
        ({"lease": True}, "lease must be a number"),
        ({"lease": None}, "lease must be a number"),
        ({"max_concurrency": 2.0}, "max_concurrency must be an int"),
        ({"max_concurrency": True}, "max_concurrency must be an int"),
        ({"max_concurrency": "4"}, "max_concurrency must be an int"),
    ],
)
def test_runner_options_of_the_wrong_type_are_type_errors(options, named, db_url, db_exists):
    with pytest.raises(TypeError, match=named):
        Runner(db_url, **options)
    assert not db_exists()


def test_runner_max_concurrency_is_an_int_of_at_least_zero(db_url, db_exists):
    # 0 is a runner that only submits runs (see test_queue.py).
    with pytest.raises(ValueError, match=r"max_concurrency must be a positive int .*, not -1"):
        Runner(db_url, max_concurrency=-1)
    with pytest.raises(TypeError, match=r"max_concurrency must be an int, not float 1\.0"):
        Runner(db_url, max_concurrency=1.0)
    assert not db_exists()


# --- 3. passwords never shown -----------------------------------------------------------------

SECRET = "hunter2x"

HOSTILE_URLS = [
    f"postgresql://user:{SECRET}@host:5432/db",
    f"postgres://user:{SECRET}@host/db?sslmode=require",
    f"postgresql://user@host:5432/db?password={SECRET}",
    f"postgresql://host/db?sslmode=require&PWD={SECRET}",
    f"postgresql://host/db?Pass={SECRET}&application_name=x",
    f"postgresql://host/db?sslpassword={SECRET}",
    f"postgresql://host/db?SECRET={SECRET}#fragment",
    f"postgresql://host/db?token={SECRET}",
    f"postgresql://host/db?password=a%26{SECRET}",
    f"postgresql://host:5432/db?password=x@{SECRET}",
    f"postgresql://user:x/{SECRET}@host:5432/db",
    f"postgresql://user:x#{SECRET}@host:5432/db",
    f"postgresql://user:x?{SECRET}@host:5432/db",
    f"postgresql://user:pa/ss#w?rd{SECRET}@host:5432/db",
    f"postgresql://user:p@ss/{SECRET}@host/db",
    f"postgresql://user:{SECRET}@host/db?password={SECRET}&token={SECRET}",
    f"mysql://user:x/{SECRET}@host/db",
    f"mysql://host/db?password={SECRET}",
    f"sqlite://user:{SECRET}@host/x.db",
    f"sqlite://user:x/{SECRET}@host/x.db",
    f"sqlite:user:{SECRET}@host/x.db",
    f"sqlite:///x.db?password={SECRET}",
    f"sqlite:///x.db?token={SECRET}&mode=ro",
    f"user:{SECRET}@host/db",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_a_password_in_a_url_is_never_shown(url, caplog, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    # Refused (SQLite forms), or a PostgreSQL server that cannot be reached.
    with pytest.raises((ConfigurationError, DatabaseError)) as exc:
        Runner(url)
    assert SECRET not in str(exc.value)
    assert SECRET not in repr(exc.value)
    assert "***" in str(exc.value)
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    # No file was made of the URL (a SQLite path holding the password, say).
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:pa/ss#w?rd@host:5432/db", "postgresql://***@host"),
        (f"postgresql://user:{SECRET}@host:5432/db", "postgresql://user:***@host:5432/db"),
        (f"postgresql://u@h/db?sslmode=require&password={SECRET}", "sslmode=require&password=***"),
    ],
)
def test_a_masked_url_still_names_what_it_can(url, shown):
    # Unparsable (a raw '/' in the password), or a server that cannot be reached.
    with pytest.raises((ConfigurationError, DatabaseError)) as exc:
        Runner(url)
    assert shown in str(exc.value)
    assert "pa/ss" not in str(exc.value)


@pytest.mark.parametrize(
    "url", [f"sqlite://user:{SECRET}@host/x.db", "sqlite://host/x.db", "sqlite://x.db"]
)
@pytest.mark.sqlite_only("SQLite URL forms")
def test_a_sqlite_url_with_an_authority_is_refused(url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as exc:
        Runner(url)
    message = str(exc.value)
    assert "SQLite URLs" in message
    assert "'sqlite:///relative.db' or 'sqlite:////absolute.db'" in message
    assert SECRET not in message
    assert os.listdir(tmp_path) == []


@pytest.mark.sqlite_only("a SQLite file path that looks like a password")
def test_an_opened_url_is_shown_masked(tmp_path):
    # An odd but valid SQLite path: ':' then '@' could be a password, so it is masked.
    (tmp_path / f"user:{SECRET}@host").mkdir()
    url = f"sqlite:///{tmp_path}/user:{SECRET}@host/x.db"
    with Runner(url) as runner:
        assert SECRET not in runner.url
        assert SECRET not in repr(runner)
        assert runner.run(one_task_workflow("masked_open_wf")).status == "completed"
    assert (tmp_path / f"user:{SECRET}@host" / "x.db").exists()


@pytest.mark.sqlite_only("SQLite URL forms")
def test_plain_sqlite_urls_are_shown_as_given_and_a_host_is_not(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/plain.db"
    with Runner(url) as runner, Runner("sqlite::memory:") as memory:
        assert runner.url == url
        assert memory.url == "sqlite::memory:"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"'sqlite://plain\.db' names a user"):
        Runner("sqlite://plain.db")  # 'plain.db' is a host, not the file ./plain.db


# --- 4. pickling by reference -----------------------------------------------------------------


def test_a_module_level_task_pickles_to_itself():
    t = pickled_tasks.double
    assert pickle.loads(pickle.dumps(t)) is t
    assert copy.deepcopy(t) is t
    assert t({"x": 4}) == {"y": 8}


def test_a_task_defined_in_a_function_refuses_to_pickle_by_name():
    @task(id="local_unpicklable")
    def local_unpicklable(ctx):
        pass

    with pytest.raises(pickle.PicklingError, match=r"task 'local_unpicklable'.*top level"):
        pickle.dumps(local_unpicklable)


def spawn_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def test_a_task_runs_in_a_process_pool():
    with spawn_pool() as pool:
        assert pool.submit(pickled_tasks.double, {"x": 21}).result(timeout=90) == {"y": 42}


def test_a_workflow_pickles_to_the_one_defined_under_its_name():
    wf = pickled_tasks.WORKFLOW
    assert pickle.loads(pickle.dumps(wf)) is wf
    assert copy.copy(wf) is wf
    assert copy.deepcopy(wf) is wf

    first = one_task_workflow("pickle_redefined_wf")
    second = one_task_workflow("pickle_redefined_wf")
    assert pickle.loads(pickle.dumps(first)) is second


def test_a_workflow_runs_in_a_process_pool(db_url, rows):
    with spawn_pool() as pool:
        future = pool.submit(pickled_tasks.run_workflow, db_url, pickled_tasks.WORKFLOW, {"x": 5})
        run_id, status, context, same = future.result(timeout=90)
    assert (status, context, same) == ("completed", {"x": 5, "y": 10}, True)
    stored = rows("SELECT workflow, status FROM runs WHERE run_id = ?", run_id)
    assert stored == [{"workflow": "pickled_wf", "status": "completed"}]


def test_unpickling_an_undefined_workflow_is_a_clear_error(tmp_path):
    data = pickle.dumps(one_task_workflow("defined_only_here_wf"))
    proc = subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"],
        input=data,
        capture_output=True,
        timeout=90,
        check=False,
        cwd=str(tmp_path),
    )
    assert proc.returncode != 0
    stderr = proc.stderr.decode()
    assert "WorkflowError" in stderr, stderr
    assert "cannot unpickle workflow 'defined_only_here_wf'" in stderr, stderr
    assert "import the module that defines it" in stderr, stderr


# --- 5. exception texts that are not valid UTF-8 ----------------------------------------------


def test_a_lone_surrogate_in_an_error_keeps_the_traceback(runner, rows):
    @task(id="surrogate_error")
    def surrogate_error(ctx):
        raise ValueError("bad \udce9 byte")

    result = runner.run(Workflow("surrogate_wf", [surrogate_error]))
    t = result.tasks["surrogate_error"]
    assert t.status == "failed"
    assert t.error == "ValueError: bad \\udce9 byte"
    assert "raise ValueError" in t.traceback
    assert "bad \\udce9 byte" in t.traceback
    stored = rows("SELECT error, traceback FROM run_tasks WHERE run_id = ?", result.run_id)
    assert stored[0]["error"] == t.error
    assert stored[0]["traceback"] == t.traceback


def test_a_lone_surrogate_in_a_skip_reason_is_kept(runner):
    @task(id="surrogate_skip")
    def surrogate_skip(ctx):
        raise Skip("nothing \udcff here")

    result = runner.run(Workflow("surrogate_skip_wf", [surrogate_skip]))
    t = result.tasks["surrogate_skip"]
    assert t.status == "skipped"
    assert t.reason == "nothing \\udcff here"


def test_an_exception_whose_str_raises_keeps_the_traceback(runner):
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no text for you")

    @task(id="unprintable_error")
    def unprintable_error(ctx):
        raise Unprintable()

    result = runner.run(Workflow("unprintable_wf", [unprintable_error]))
    t = result.tasks["unprintable_error"]
    assert t.status == "failed"
    assert t.error.endswith("Unprintable: <exception str() failed>")
    assert "raise Unprintable()" in t.traceback
