"""Notebook-style restart: define, start, the kernel dies, define again, open a Runner."""

from __future__ import annotations

import json
from pathlib import Path

from durable_helpers import SCRIPTS, Child, integrity

KERNEL = SCRIPTS / "notebook_kernel.py"

DEFINE_CELL = """
import os, time
from pathlib import Path
from cloacina import Runner, Workflow, task

LOG, MARKERS = {log!r}, Path({markers!r})

def record(task_id):
    with open(LOG, "a") as f:
        f.write(task_id + "\\n")
        f.flush()
        os.fsync(f.fileno())
    (MARKERS / (task_id + ".started")).touch()

@task(id="{name}_load")
def load(ctx):
    record("{name}_load")
    ctx["rows"] = list(range(ctx["n"]))

@task(id="{name}_transform", dependencies=[load])
def transform(ctx):
    record("{name}_transform")
    time.sleep(0.4)
    ctx["squares"] = [r * r for r in ctx["rows"]]

@task(id="{name}_save", dependencies=[transform])
def save(ctx):
    record("{name}_save")
    return {{"saved": sum(ctx["squares"])}}

wf = Workflow("{name}", [load, transform, save])
_out = wf.version
"""

POLL_CELL = """
deadline = time.monotonic() + 30
while True:
    result = runner.get_run({run_id!r})
    if result.status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
        break
    time.sleep(0.05)
_out = {{
    "status": result.status,
    "context": result.context,
    "events": [e["kind"] for e in result.events],
    "transform": [(a.attempt, a.status, a.error) for a in result.tasks["{name}_transform"].history],
}}
"""


class Kernel(Child):
    def __init__(self, workdir: Path, label: str) -> None:
        super().__init__(KERNEL, [], workdir, label)
        assert self.event()["out"] == "kernel ready"

    def run_cell(self, code: str, timeout: float = 40.0):
        self.send(json.dumps({"cell": code}))
        reply = self.event(timeout)
        assert reply["ok"], f"cell failed:\n{reply.get('error')}\n{self.describe()}"
        return reply["out"]


def kill_kernel_mid_run(d) -> tuple[str, str, str]:
    define = DEFINE_CELL.format(log=str(d.log), markers=str(d.markers), name=d.name)
    with Kernel(d.workdir, "kernel-1") as kernel:
        version = kernel.run_cell(define)
        kernel.run_cell(f"runner = Runner({d.url!r})")
        run_id = kernel.run_cell("handle = runner.start(wf, {'n': 4}); _out = handle.run_id")
        d.wait_marker(f"{d.name}_transform", kernel)
        kernel.sigkill()
    assert integrity(d.snapshot()) == "ok"
    return run_id, define, version


def check_recovered(d, out: dict) -> None:
    assert out["status"] == "completed", out
    assert out["context"] == {"n": 4, "rows": [0, 1, 2, 3], "squares": [0, 1, 4, 9], "saved": 14}
    assert d.executions() == {f"{d.name}_load": 1, f"{d.name}_transform": 2, f"{d.name}_save": 1}
    assert [(a, s) for a, s, _ in out["transform"]] == [(1, "failed"), (2, "completed")]
    assert out["transform"][0][2].startswith("interrupted")
    assert "recovered" in out["events"], out
    assert "version_mismatch" not in out["events"], out
    assert integrity(d.db_path) == "ok"


def test_define_again_then_open_runner_resumes_by_itself(durable):
    d = durable("dur_nb_define_first")
    run_id, define, version = kill_kernel_mid_run(d)

    with Kernel(d.workdir, "kernel-2") as kernel:
        # The user re-runs the cells from the top: definitions, then the Runner. No resume.
        assert kernel.run_cell(define) == version
        kernel.run_cell(f"runner = Runner({d.url!r})")
        out = kernel.run_cell(POLL_CELL.format(run_id=run_id, name=d.name))
        kernel.run_cell("runner.close()")
    check_recovered(d, out)


def test_runner_opened_before_the_definitions_recovers_within_seconds(durable):
    """The Runner cell comes first in the new kernel: the run is not defined when the
    Runner starts, so it is left interrupted; the periodic recovery (every ~2 s) takes
    it over once the cell that defines the workflow has run."""
    d = durable("dur_nb_runner_first")
    run_id, define, version = kill_kernel_mid_run(d)

    with Kernel(d.workdir, "kernel-2") as kernel:
        kernel.run_cell(f"from cloacina import Runner\nrunner = Runner({d.url!r})")
        status = kernel.run_cell(f"_out = runner.get_run({run_id!r}).status")
        assert status == "interrupted"
        assert d.executions()[f"{d.name}_transform"] == 1  # nothing ran meanwhile
        assert kernel.run_cell(define) == version
        out = kernel.run_cell(POLL_CELL.format(run_id=run_id, name=d.name))
        kernel.run_cell("runner.close()")
    check_recovered(d, out)
    assert out["events"].index("interrupted") < out["events"].index("recovered"), out
