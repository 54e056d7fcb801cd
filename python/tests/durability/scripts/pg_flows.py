"""Workflows of the PostgreSQL durability tests, shared by pg_proc.py and by
`python -m cloacina worker pg_flows.py` (the same code, so the same workflow versions).

Every task appends one line per phase to the side-effect log named by
$CLOACINA_TEST_LOG (outside the database, so it shows every execution, including those
whose result the engine discarded):

    <time_ns> <pid> <run key> <task id> start|finish

where the run key is the run's input `key`. A plain append of a short line is one
write(2) with O_APPEND: lines of concurrent processes never interleave, and a line
written before a SIGKILL is not lost.

Imported as a worker's target, the module defines `workflow` from $CLOACINA_TEST_FLOW,
`KIND:NAME:N:SLEEP` (for example `chain:pg_queue:3:0.05`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cloacina import Workflow, task


def side_effect(ctx, task_id: str, phase: str) -> None:
    key = ctx.get("key", "-")
    line = f"{time.time_ns()} {os.getpid()} {key} {task_id} {phase}\n"
    with open(os.environ["CLOACINA_TEST_LOG"], "a", encoding="utf-8") as f:
        f.write(line)


def wait_for_gate(ctx) -> None:
    """Blocks (at most 60 s) until the file named by the input's `gate` exists, if any."""
    gate = ctx.get("gate")
    if gate:
        deadline = time.monotonic() + 60
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def chain(name: str, n: int, sleep: float) -> Workflow:
    """n sequential steps `<name>_s00`...: each logs its start, sleeps `sleep` seconds (the
    first one first waits for the input's `gate`), appends its id to ctx["acc"] and logs
    its finish."""
    steps = []
    previous = None
    for i in range(n):
        task_id = f"{name}_s{i:02d}"

        def step(ctx, task_id=task_id, first=i == 0):
            side_effect(ctx, task_id, "start")
            if first:
                wait_for_gate(ctx)
            time.sleep(sleep)
            ctx["acc"] = [*ctx.get("acc", []), task_id]
            side_effect(ctx, task_id, "finish")

        steps.append(task(id=task_id, dependencies=[previous] if previous else [])(step))
        previous = task_id
    return Workflow(name, steps)


def small(name: str, n: int = 3, sleep: float = 0.0) -> Workflow:
    """root -> (left, right): three quick tasks, two of them in parallel."""
    root_id, left_id, right_id = f"{name}_root", f"{name}_left", f"{name}_right"

    @task(id=root_id)
    def root(ctx):
        side_effect(ctx, root_id, "start")
        ctx["base"] = ctx["i"] * 10

    @task(id=left_id, dependencies=[root_id])
    def left(ctx):
        side_effect(ctx, left_id, "start")
        return {"left": ctx["base"] + 1}

    @task(id=right_id, dependencies=[root_id])
    def right(ctx):
        side_effect(ctx, right_id, "start")
        return ctx["base"] + 2  # stored under the task's id

    return Workflow(name, [root, left, right])


KINDS = {"chain": chain, "small": small}


def from_spec(spec: str) -> Workflow:
    """`KIND:NAME:N:SLEEP` -> the workflow."""
    kind, name, n, sleep = spec.split(":")
    return KINDS[kind](name, int(n), float(sleep))


if os.environ.get("CLOACINA_TEST_FLOW"):
    workflow = from_spec(os.environ["CLOACINA_TEST_FLOW"])
