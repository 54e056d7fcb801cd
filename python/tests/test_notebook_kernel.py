"""cloacina inside a real Jupyter kernel (ipykernel), driven as a notebook drives it.

Each test starts its own kernel (running this interpreter) on its own SQLite file, sends
cells, and interrupts or restarts the kernel as a user would. Cells hand values back to the
test with ``emit(...)`` (see kernel_helpers). Every wait is bounded; the kernel is shut down
whatever happens.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from kernel_helpers import Kernel, run_notebook, wait_for_file

# A sync body that runs 30 s unless stopped, ticking a marker file every 50 ms.
LOOPING_BODY = """
import time
from pathlib import Path
TICKS = Path("ticks.txt")

def count_ticks():
    return len(TICKS.read_text().splitlines()) if TICKS.exists() else 0

@task
def looping_body(ctx):
    for i in range(600):
        with TICKS.open("a") as f:
            f.write(f"{i}\\n")
        time.sleep(0.05)
    Path("body_done.txt").write_text("done")
    return {"slow": True}
"""

FINAL = ("completed", "failed", "cancelled")


def url_of(tmp_path: Path) -> str:
    return "sqlite:///" + str(tmp_path / "nb.db")  # an absolute path: four slashes


@pytest.fixture
def kernel(tmp_path: Path):
    k = Kernel(tmp_path)
    try:
        k.start()
        yield k
    finally:
        k.shutdown()


def test_ctrl_c_cancels_the_run_stops_the_body_and_frees_the_slot(kernel, tmp_path):
    kernel.run(
        "from cloacina import Runner, Workflow, task\n"
        + LOOPING_BODY
        + f"""
wf = Workflow("nb_slow", [looping_body])

@task
def quick(ctx):
    return {{"quick": True}}

other = Workflow("nb_quick", [quick])
runner = Runner({url_of(tmp_path)!r}, max_concurrency=1)
"""
    ).ok()

    code = "result = runner.run(wf)\n"
    msg_id = kernel.send(code)
    wait_for_file(tmp_path / "ticks.txt", 30.0, "the body never started", kernel)
    time.sleep(1.0)
    interrupted_at = time.monotonic()
    kernel.interrupt()
    cell = kernel.collect(msg_id, code, timeout=30.0)
    reacted = time.monotonic() - interrupted_at
    assert cell.ename == "KeyboardInterrupt", cell.describe()
    # The body alone would go on for about 28 s more.
    assert reacted < 10.0, f"the interrupted cell took {reacted:.1f} s to end\n{cell.describe()}"

    # The only slot is free at once: another workflow runs right away.
    cell = kernel.run(
        """
t0 = time.monotonic()
r = runner.run(other)
emit({"status": r.status, "elapsed": time.monotonic() - t0, "error": r.error})
""",
        timeout=60.0,
    ).ok()
    quick = cell.value()
    assert quick["status"] == "completed", cell.describe()
    assert quick["elapsed"] < 3.0, f"the next run waited {quick['elapsed']:.1f} s for the slot"

    # The looping body stopped, and the run and its task are recorded as cancelled.
    cell = kernel.run(
        """
n1 = count_ticks()
time.sleep(1.0)
n2 = count_ticks()
runs = runner.list_runs(workflow="nb_slow")
emit({
    "n1": n1,
    "n2": n2,
    "body_done": Path("body_done.txt").exists(),
    "runs": [
        {"status": r.status, "tasks": {t: v.status for t, v in r.tasks.items()}}
        for r in runs
    ],
})
"""
    ).ok()
    after = cell.value()
    assert after["n2"] == after["n1"], f"the body still ticks after Ctrl-C: {after}"
    assert 0 < after["n1"] < 600 and not after["body_done"], after
    assert after["runs"] == [{"status": "cancelled", "tasks": {"looping_body": "cancelled"}}], after


def test_graceful_restart_is_fast_and_the_run_is_recovered_after_it(kernel, tmp_path):
    url = url_of(tmp_path)
    cell = kernel.run(
        """
import atexit
from pathlib import Path

def _after_cloacina_closed():
    # Registered before cloacina is imported, so it runs after cloacina's atexit hook
    # (which closes the runner): it shows that the kernel exited gracefully.
    Path("exited.txt").write_text("exited")

atexit.register(_after_cloacina_closed)
from cloacina import Runner, Workflow, task
"""
        + LOOPING_BODY
        + f"""
wf = Workflow("nb_restart", [looping_body])
runner = Runner({url!r})
handle = runner.start(wf)
emit(handle.run_id)
"""
    ).ok()
    run_id = cell.value()
    wait_for_file(tmp_path / "ticks.txt", 30.0, "the body never started", kernel)
    time.sleep(0.5)

    # jupyter_client forces a kernel that has not exited after half of shutdown_wait_time
    # (SIGTERM); with 60 s, only the kernel's own graceful exit can make the restart fast.
    kernel.km.shutdown_wait_time = 60.0
    took = kernel.restart(now=False)
    assert (tmp_path / "exited.txt").exists(), (
        "the kernel did not exit gracefully (its atexit hooks did not run)\n" + kernel.kernel_log()
    )
    assert took < 10.0, f"the graceful restart took {took:.1f} s\n{kernel.kernel_log()}"
    ticks = len((tmp_path / "ticks.txt").read_text().splitlines())
    assert ticks < 600 and not (tmp_path / "body_done.txt").exists(), ticks

    # In the new kernel: define the workflow again (a quick body now) and open a runner.
    cell = kernel.run(
        f"""
import time
from pathlib import Path
from cloacina import Runner, Workflow, task

@task
def looping_body(ctx):
    Path("second_body.txt").write_text("ran")
    return {{"slow": False}}

wf = Workflow("nb_restart", [looping_body])
runner = Runner({url!r})
deadline = time.monotonic() + 30.0
r = runner.get_run({run_id!r})
while (r is None or r.status not in {FINAL!r}) and time.monotonic() < deadline:
    time.sleep(0.1)
    r = runner.get_run({run_id!r})
emit(None if r is None else {{
    "status": r.status,
    "error": r.error,
    "context": r.context,
    "events": [e["kind"] for e in r.events],
    "tasks": {{t: v.status for t, v in r.tasks.items()}},
}})
""",
        timeout=60.0,
    ).ok()
    recovered = cell.value()
    assert recovered is not None, cell.describe()
    assert recovered["status"] == "completed", recovered
    assert recovered["context"] == {"slow": False}, recovered
    assert "recovered" in recovered["events"], recovered
    assert (tmp_path / "second_body.txt").exists()


ABC = """
from cloacina import Runner, Workflow, WorkflowError, task

@task
def a(ctx):
    return {"x": 1}

@task
def b(ctx):
    return {"y": 2}

@task(dependencies=[a])
def c(ctx):
    return {"z": ctx["x"]}

wf = Workflow("w", [a, b, c])
runner = Runner(URL)
r1 = runner.run(wf)
emit({"status": r1.status, "version": wf.version, "context": r1.context})
"""


def test_a_task_redefined_in_a_later_cell_is_used_with_its_new_edges(tmp_path):
    first, second = run_notebook(
        tmp_path,
        [
            ABC.replace("URL", repr(url_of(tmp_path))),
            """
@task(dependencies=[a, b])
def c(ctx):
    return {"z": ctx["x"] + ctx["y"]}

r2 = runner.run(wf)
emit({
    "status": r2.status,
    "context": r2.context,
    "error": r2.error,
    "task_errors": {t: v.error for t, v in r2.tasks.items() if v.error},
    "version": wf.version,
    "recorded_version": runner.get_run(r2.run_id).version,
})
""",
        ],
    )
    r1 = first.ok().value()
    assert r1["status"] == "completed", r1
    assert r1["context"] == {"x": 1, "y": 2, "z": 1}, r1
    r2 = second.ok().value()
    assert r2["version"] != r1["version"], f"wf.version did not change: {r2['version']}"
    assert r2["status"] == "completed", r2
    assert r2["context"]["z"] == 3, r2
    assert r2["recorded_version"] == r2["version"], r2


def test_a_task_redefined_with_an_unknown_dependency_fails_the_next_run(tmp_path):
    first, second = run_notebook(
        tmp_path,
        [
            ABC.replace("URL", repr(url_of(tmp_path))),
            """
@task(dependencies=["nope"])
def c(ctx):
    return {"z": 0}

emit("defined")
runner.run(wf)
""",
        ],
    )
    assert first.ok().value()["status"] == "completed", first.describe()
    assert second.data() == ["defined"], second.describe()
    assert second.ename == "WorkflowError", second.describe()
    message = second.error["evalue"]
    assert "'c'" in message and "'nope'" in message, message


def cloacina_lines(stderr: str) -> list[str]:
    """Lines of logging.basicConfig's format (LEVEL:logger:message) from cloacina's loggers."""
    lines = []
    for line in stderr.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] == "cloacina" or parts[1].startswith("cloacina.")):
            lines.append(line)
    return lines


def test_logging_configured_in_a_cell_shows_runs_and_tasks_in_its_output(tmp_path):
    setup, info, debug = run_notebook(
        tmp_path,
        [
            f"""
from cloacina import Runner, Workflow, task

@task
def first_step(ctx):
    return {{"a": 1}}

@task(dependencies=[first_step])
def second_step(ctx):
    return {{"b": ctx["a"] + 1}}

wf = Workflow("nb_logged", [first_step, second_step])
runner = Runner({url_of(tmp_path)!r})
""",
            """
import logging
logging.basicConfig(level=logging.INFO, force=True)
r = runner.run(wf)
emit({"run_id": r.run_id, "status": r.status})
""",
            """
logging.basicConfig(level=logging.DEBUG, force=True)
r = runner.run(wf)
emit({"run_id": r.run_id, "status": r.status})
""",
        ],
    )
    setup.ok()
    run = info.ok().value()
    assert run["status"] == "completed", run
    lines = [line for line in cloacina_lines(info.stderr) if run["run_id"] in line]
    assert any("started" in line for line in lines), f"no 'started' line\n{info.describe()}"
    assert any("completed" in line for line in lines), f"no 'completed' line\n{info.describe()}"

    run = debug.ok().value()
    assert run["status"] == "completed", run
    lines = [line for line in cloacina_lines(debug.stderr) if run["run_id"] in line]
    for task_id in ("first_step", "second_step"):
        assert any(task_id in line for line in lines), (
            f"no DEBUG line for task {task_id}\n{debug.describe()}"
        )


def test_run_async_awaited_in_a_cell_completes_and_cancels(tmp_path):
    setup, done, timed_out, after = run_notebook(
        tmp_path,
        [
            "import asyncio\nfrom cloacina import Runner, Workflow, task\n"
            + LOOPING_BODY
            + f"""
@task
async def quick(ctx):
    await asyncio.sleep(0)
    return {{"quick": True}}

wf = Workflow("nb_async", [quick])
slow_wf = Workflow("nb_async_slow", [looping_body])
runner = Runner({url_of(tmp_path)!r})
""",
            """
r = await runner.run_async(wf)
emit({"status": r.status, "context": r.context})
""",
            """
t0 = time.monotonic()
try:
    await asyncio.wait_for(runner.run_async(slow_wf), 0.5)
finally:
    emit(time.monotonic() - t0)
""",
            f"""
runs = runner.list_runs(workflow="nb_async_slow")
deadline = time.monotonic() + 10.0
r = runner.get_run(runs[0].run_id)
while r.status not in {FINAL!r} and time.monotonic() < deadline:
    time.sleep(0.1)
    r = runner.get_run(r.run_id)
emit({{
    "runs": len(runs),
    "status": r.status,
    "tasks": {{t: v.status for t, v in r.tasks.items()}},
}})
""",
        ],
    )
    setup.ok()
    result = done.ok().value()
    assert result == {"status": "completed", "context": {"quick": True}}, result

    assert timed_out.ename == "TimeoutError", timed_out.describe()
    (elapsed,) = timed_out.data()
    assert elapsed < 5.0, f"wait_for took {elapsed:.1f} s to give up\n{timed_out.describe()}"

    cancelled = after.ok().value()
    assert cancelled["runs"] == 1, cancelled
    assert cancelled["status"] == "cancelled", cancelled


def test_run_shows_live_progress_in_the_cell_and_ends_as_the_runs_display(kernel, tmp_path):
    cell = kernel.run(
        f"""
import time
from cloacina import Runner, Workflow, task

@task
def slow_a(ctx):
    time.sleep(0.6)

@task(dependencies=["slow_a"])
def slow_b(ctx):
    time.sleep(0.6)

runner = Runner({url_of(tmp_path)!r})
result = runner.run(Workflow("nb_progress", [slow_a, slow_b]))
"""
    ).ok()
    shown = [o for o in cell.outputs if o["output_type"] == "display_data"]
    updates = [o for o in cell.outputs if o["output_type"] == "update_display_data"]
    assert len(shown) == 1, cell.outputs
    display_id = shown[0]["transient"]["display_id"]
    assert updates and all(u["transient"]["display_id"] == display_id for u in updates)
    # Updated in place while it runs (a few times a second), ...
    running = [u["data"]["text/html"] for u in updates if "text/html" in u["data"]]
    assert any("1/2 tasks done" in html for html in running), running
    assert any("0/2 tasks done (1 running)" in html for html in running), running
    # ... then the output is the run itself.
    assert "RunResult(" in updates[-1]["data"]["text/plain"]
    assert "completed" in updates[-1]["data"]["text/plain"]
    # No terminal line in a notebook, and no progress when asked for none.
    assert "tasks done" not in cell.stderr
    # A cell ending in the run itself shows it once in full: the progress display ends
    # as the run's display, the cell's result is its short text.
    last = kernel.run("runner.run(Workflow('nb_progress', [slow_a, slow_b]))\n").ok()
    final = [o for o in last.outputs if o["output_type"] == "update_display_data"][-1]
    assert "<svg" in final["data"]["text/html"]
    (own,) = [o for o in last.outputs if o["output_type"] == "execute_result"]
    assert set(own["data"]) == {"text/plain"} and "RunResult(" in own["data"]["text/plain"]
    # In the next cell, the same result shows in full again.
    again = kernel.run("_").ok()
    (full,) = [o for o in again.outputs if o["output_type"] == "execute_result"]
    assert "<svg" in full["data"]["text/html"]
    quiet = kernel.run("runner.run(Workflow('nb_progress', [slow_a, slow_b]), progress=False)\n")
    assert not [o for o in quiet.ok().outputs if o["output_type"] != "execute_result"]
