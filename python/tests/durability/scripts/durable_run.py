"""Defines one of the durability test workflows, then starts, recovers or resumes a run.

Usage: durable_run.py MODE --db URL --name WORKFLOW --kind KIND [options]

MODE is one of:
  start    open a Runner, start a run, print {"event": "started"}, wait for it, print
           {"event": "finished"}, with --again run the workflow once more and print
           {"event": "again"}, stay --hold seconds (the test usually SIGKILLs it);
  recover  open a Runner (recovery is automatic) and wait for --run-id: no other call;
  resume   open a Runner with recover=False and call runner.resume(--run-id);
  idle     open a Runner, stay --hold seconds, print the runs listed as interrupted;
  watch    open a Runner, call runner.recover() every 0.2 s for --hold seconds, print what
           it returned;
  race     print READY, open a Runner when told "OPEN", then start one run per key read
           from stdin (same key as idempotency_key), until "DONE".

KIND is chain | fanout | retry | fixable | versioned | single; --variant selects the code of
the tasks (fixable: broken | fixed; versioned: v1 | v2 | v3).

Every task appends "<task id>" to --log (flushed and fsynced: the file is outside the
database, so it shows every execution) and then touches <--markers>/<task id>.started,
before it sleeps --sleep seconds. Output: one JSON object per line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from cloacina import Runner, Workflow, task
from cloacina.runner import RunHandle

ARGS: argparse.Namespace


def now_us() -> int:
    return time.time_ns() // 1000


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def side_effect(task_id: str, extra: str = "") -> None:
    """Records one execution of a task outside the database, then says it started."""
    line = task_id if not extra else f"{task_id} {extra}"
    with open(ARGS.log, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    if ARGS.markers:
        (Path(ARGS.markers) / f"{task_id}.started").touch()


# --- workflow kinds ----------------------------------------------------------------------


def chain(name: str) -> Workflow:
    """n sequential steps; each appends its id to ctx["acc"]."""
    steps = []
    previous = None
    for i in range(ARGS.n):
        task_id = f"{name}_s{i:02d}"

        def step(ctx, task_id=task_id):
            side_effect(task_id)
            time.sleep(ARGS.sleep)
            ctx["acc"] = [*ctx["acc"], task_id]

        steps.append(task(id=task_id, dependencies=[previous] if previous else [])(step))
        previous = task_id
    return Workflow(name, steps)


def fanout(name: str) -> Workflow:
    """root -> n parallel tasks -> join."""
    root_id, join_id = f"{name}_root", f"{name}_join"
    part_ids = [f"{name}_p{i:02d}" for i in range(ARGS.n)]

    @task(id=root_id)
    def root(ctx):
        side_effect(root_id)
        time.sleep(ARGS.sleep)
        ctx["base"] = ctx["seed"] * 2

    parts = []
    for i, part_id in enumerate(part_ids):

        def part(ctx, part_id=part_id, i=i):
            side_effect(part_id)
            time.sleep(ARGS.sleep)
            ctx[part_id] = ctx["base"] + i

        parts.append(task(id=part_id, dependencies=[root_id])(part))

    @task(id=join_id, dependencies=part_ids)
    def join(ctx):
        side_effect(join_id)
        ctx["total"] = sum(ctx[p] for p in part_ids)

    return Workflow(name, [root, *parts, join])


def retry(name: str) -> Workflow:
    """prep -> flaky (retries=1, retry_delay=--retry-delay; its first attempt fails) -> after."""
    prep_id, flaky_id, after_id = f"{name}_prep", f"{name}_flaky", f"{name}_after"
    flag = Path(ARGS.markers) / "flaky.failed-once"

    @task(id=prep_id)
    def prep(ctx):
        side_effect(prep_id)
        ctx["prepared"] = True

    @task(id=flaky_id, dependencies=[prep_id], retries=1, retry_delay=ARGS.retry_delay)
    def flaky(ctx):
        if not flag.exists():
            flag.touch()
            side_effect(flaky_id, "fail")
            raise RuntimeError("first attempt fails")
        side_effect(flaky_id, "ok")
        ctx["flaky"] = "ok"

    @task(id=after_id, dependencies=[flaky_id])
    def after(ctx):
        side_effect(after_id)
        ctx["after"] = ctx["flaky"] + "!"

    return Workflow(name, [prep, flaky, after])


def fixable(name: str) -> Workflow:
    """a -> b -> c; b raises in the "broken" variant."""
    a_id, b_id, c_id = f"{name}_a", f"{name}_b", f"{name}_c"

    @task(id=a_id)
    def a(ctx):
        side_effect(a_id)
        ctx["token"] = uuid.uuid4().hex  # differs on every execution

    if ARGS.variant == "broken":

        @task(id=b_id, dependencies=[a_id])
        def b(ctx):
            side_effect(b_id)
            raise ValueError("bug in b")

    else:

        @task(id=b_id, dependencies=[a_id])
        def b(ctx):
            side_effect(b_id)
            ctx["b"] = "fixed:" + ctx["token"]

    @task(id=c_id, dependencies=[b_id])
    def c(ctx):
        side_effect(c_id)
        ctx["c"] = ctx["b"].upper()

    return Workflow(name, [a, b, c])


def versioned(name: str) -> Workflow:
    """a -> b (sleeps) -> c; v2 changes c's code, v3 replaces c by d."""
    a_id, b_id, c_id, d_id = (f"{name}_{x}" for x in "abcd")

    @task(id=a_id)
    def a(ctx):
        side_effect(a_id)
        ctx["a"] = 1

    @task(id=b_id, dependencies=[a_id])
    def b(ctx):
        side_effect(b_id)
        time.sleep(ARGS.sleep)
        ctx["b"] = ctx["a"] + 1

    if ARGS.variant == "v1":

        @task(id=c_id, dependencies=[b_id])
        def c(ctx):
            side_effect(c_id)
            ctx["c"] = "v1"

        last = c
    elif ARGS.variant == "v2":

        @task(id=c_id, dependencies=[b_id])
        def c2(ctx):
            side_effect(c_id)
            ctx["c"] = "v2:" + str(ctx["b"])

        last = c2
    else:

        @task(id=d_id, dependencies=[b_id])
        def d(ctx):
            side_effect(d_id)
            ctx["d"] = "v3"

        last = d
    return Workflow(name, [a, b, last])


def single(name: str) -> Workflow:
    """One task that records the run's key."""
    task_id = f"{name}_only"

    @task(id=task_id)
    def only(ctx):
        side_effect(task_id, ctx["key"])
        time.sleep(ARGS.sleep)
        ctx["done"] = ctx["key"]

    return Workflow(name, [only])


KINDS = {
    "chain": chain,
    "fanout": fanout,
    "retry": retry,
    "fixable": fixable,
    "versioned": versioned,
    "single": single,
}


# --- results -----------------------------------------------------------------------------


def micros(value) -> int | None:
    if value is None:
        return None
    return round(value.timestamp() * 1_000_000)


def summary(result) -> dict:
    return {
        "run_id": result.run_id,
        "workflow": result.workflow,
        "status": result.status,
        "context": result.context,
        "error": result.error,
        "version": result.version,
        "events": [{"kind": e["kind"], "detail": e["detail"]} for e in result.events],
        "tasks": {
            tid: {
                "status": t.status,
                "attempts": t.attempts,
                "error": t.error,
                "reason": t.reason,
                "history": [
                    {
                        "attempt": a.attempt,
                        "status": a.status,
                        "error": a.error,
                        "started_at": micros(a.started_at),
                        "finished_at": micros(a.finished_at),
                    }
                    for a in t.history
                ],
            }
            for tid, t in result.tasks.items()
        },
    }


def wait_final(runner: Runner, run_id: str, timeout: float):
    """Polls get_run (works whoever drives the run) until the run is final."""
    deadline = time.monotonic() + timeout
    while True:
        result = runner.get_run(run_id)
        if result is not None and result.status in ("completed", "failed", "cancelled"):
            return result
        if time.monotonic() > deadline:
            return result
        time.sleep(0.02)


# --- modes -------------------------------------------------------------------------------


def main() -> int:
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["start", "recover", "resume", "idle", "watch", "race"])
    p.add_argument("--db", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--kind", required=True, choices=sorted(KINDS))
    p.add_argument("--variant", default="v1")
    p.add_argument("--log", required=True)
    p.add_argument("--markers", default="")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--sleep", type=float, default=0.2)
    p.add_argument("--retry-delay", type=float, default=2.0)
    p.add_argument("--input", default="{}")
    p.add_argument("--key", default=None)
    p.add_argument("--run-id", default=None)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--again", action="store_true")
    p.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    p.add_argument("--timeout", type=float, default=60.0)
    ARGS = p.parse_args()

    workflow = KINDS[ARGS.kind](ARGS.name)

    if ARGS.mode == "race":
        emit(event="ready", pid=os.getpid())
        assert sys.stdin.readline().strip() == "OPEN"
        runner = Runner(ARGS.db, max_concurrency=ARGS.concurrency)
        emit(event="opened")
        run_ids = []
        for line in sys.stdin:
            key = line.strip()
            if key == "DONE":
                break
            handle = runner.start(workflow, {"key": key}, idempotency_key=key)
            run_ids.append(handle.run_id)
            emit(event="submitted", key=key, run_id=handle.run_id)
        results = [wait_final(runner, run_id, ARGS.timeout) for run_id in run_ids]
        emit(event="done", statuses={r.run_id: r.status for r in results})
        runner.close()
        return 0

    while time.time() < ARGS.start_at:  # lets several processes open at the same moment
        pass
    opened_before = now_us()
    runner = Runner(
        ARGS.db,
        max_concurrency=ARGS.concurrency,
        recover=ARGS.mode != "resume",
        lease=ARGS.lease,
    )
    emit(event="runner_open", before_us=opened_before, after_us=now_us(), pid=os.getpid())

    if ARGS.mode == "start":
        handle = runner.start(workflow, json.loads(ARGS.input), idempotency_key=ARGS.key)
        emit(event="started", run_id=handle.run_id, version=workflow.version)
        result = handle.wait(timeout=ARGS.timeout)
        emit(event="finished", **summary(result))
        if ARGS.again:  # the engine still works: a second run of the same workflow
            again = runner.start(workflow, json.loads(ARGS.input)).wait(timeout=ARGS.timeout)
            emit(event="again", **summary(again))
        time.sleep(ARGS.hold)  # stay alive (to be killed) after the run ended
    elif ARGS.mode == "recover":
        result = RunHandle(runner, ARGS.run_id).wait(timeout=ARGS.timeout)
        emit(event="finished", **summary(result))
    elif ARGS.mode == "resume":
        handle = runner.resume(ARGS.run_id)
        result = handle.wait(timeout=ARGS.timeout)
        emit(event="finished", **summary(result))
    elif ARGS.mode == "idle":
        time.sleep(ARGS.hold)
        listed = runner.list_runs(status="interrupted")
        emit(event="idle", interrupted=[r.run_id for r in listed])
    elif ARGS.mode == "watch":
        taken: list[str] = []
        deadline = time.monotonic() + ARGS.hold
        while time.monotonic() < deadline:
            taken.extend(runner.recover())
            time.sleep(0.2)
        emit(event="watched", taken=taken)
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
