"""One process of the PostgreSQL durability tests (durability/test_pg_*.py).

Usage: pg_proc.py MODE --db URL [--schema S] --flow KIND:NAME:N:SLEEP [options]

MODE is one of:
  load      start --runs runs of the flow (keys <--tag>-0000...) in batches of --batch,
            waiting for each batch; print {"event": "done"} with every run's status;
  reader    list_runs and get_run in a loop until stdin says STOP; print {"event": "read"}
            with how many calls were made and any inconsistency seen;
  owner     start --runs runs (keys k0, k1...), print "started" with their ids, wait for
            each and print "finished"; with --again run the flow once more ("again");
            stay --hold seconds;
  follower  open a Runner defining the flow, print "runner_open"; then wait for each run id
            read from stdin and print its "finished"; DONE ends it; with --waiters K, K
            threads wait for each run at once, and "finished" comes after DONE;
  race      open a Runner at --start-at (epoch seconds), run the flow once, print "done";
  submit    a submit-only Runner (max_concurrency=0): queue --runs runs (keys q000...,
            their first task waiting for the file --gate if given), print "queued", wait
            for all, print "finished";
  open      only open a Runner (the bad-URL tests): print "opened", or "error" with the
            exception's type, str, repr and traceback, and how long it took.

Tasks write the side-effect log $CLOACINA_TEST_LOG (see pg_flows.py). Output: one JSON
object per line on stdout. Any exception in a mode prints {"event": "error"} and exits 1;
log records of the `cloacina` logger at WARNING or above are counted and printed at the
end (the load test wants none); every record goes to stderr too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
import traceback

from cloacina import Runner
from cloacina.runner import RunHandle
from pg_flows import from_spec

ARGS: argparse.Namespace
WARNINGS: list[str] = []


class _Collect(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            WARNINGS.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def emit(**fields) -> None:
    print(json.dumps(fields, default=str), flush=True)


def micros(value) -> int | None:
    return None if value is None else round(value.timestamp() * 1_000_000)


def summary(result) -> dict:
    return {
        "run_id": result.run_id,
        "status": result.status,
        "context": result.context,
        "error": result.error,
        "events": [
            {"kind": e["kind"], "at": micros(e["at"]), "detail": e["detail"]} for e in result.events
        ],
        "tasks": {
            tid: {
                "status": t.status,
                "attempts": t.attempts,
                "history": [(a.attempt, a.status, a.error) for a in t.history],
            }
            for tid, t in result.tasks.items()
        },
    }


def open_runner(**options) -> Runner:
    return Runner(ARGS.db, schema=ARGS.schema, **options)


# --- modes -------------------------------------------------------------------------------


def load() -> None:
    workflow = from_spec(ARGS.flow)
    runner = open_runner(max_concurrency=ARGS.concurrency)
    emit(event="runner_open", pid=os.getpid())
    statuses: dict[str, str] = {}
    wrong: list[str] = []
    began = time.monotonic()
    for first in range(0, ARGS.runs, ARGS.batch):
        handles = {}
        for i in range(first, min(first + ARGS.batch, ARGS.runs)):
            key = f"{ARGS.tag}-{i:04d}"
            handles[key] = runner.start(workflow, {"key": key, "i": i})
        for key, handle in handles.items():
            result = handle.wait(timeout=ARGS.timeout)
            statuses[key] = result.status
            i = int(key.rsplit("-", 1)[1])
            expected = {"key": key, "i": i, "base": i * 10, "left": i * 10 + 1}
            expected[f"{workflow.name}_right"] = i * 10 + 2
            if result.context != expected or result.events:
                wrong.append(f"{key}: {result.context} {result.events}")
    runner.close()
    emit(
        event="done",
        statuses=statuses,
        wrong=wrong[:20],
        seconds=time.monotonic() - began,
        warnings=WARNINGS,
    )


def reader() -> None:
    runner = open_runner()
    emit(event="runner_open", pid=os.getpid())
    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "STOP":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    calls = {"list": 0, "get": 0}
    odd: list[str] = []
    seen: list[str] = []
    while not stop.is_set():
        listed = runner.list_runs(limit=50)
        calls["list"] += 1
        for s in listed:
            seen.append(s.run_id)
            # One statement, one snapshot: a finished run's tasks are all final.
            if s.status == "completed" and set(s.task_counts) != {"completed"}:
                odd.append(f"summary {s.run_id} {s.status} {s.task_counts}")
        for run_id in random.sample(seen, min(3, len(seen))):
            result = runner.get_run(run_id)
            calls["get"] += 1
            if result is None:
                odd.append(f"{run_id} listed, then not found")
            elif result.status == "completed" and any(
                t.status != "completed" for t in result.tasks.values()
            ):
                odd.append(f"get {run_id} completed with tasks {result.tasks}")
        runner.list_runs(status="completed", limit=10)
        runner.list_runs(workflow=from_spec_name(), limit=10)
        calls["list"] += 2
        seen = seen[-2000:]
    runner.close()
    emit(event="read", calls=calls, odd=odd[:20], warnings=WARNINGS)


def from_spec_name() -> str:
    return ARGS.flow.split(":")[1]


def owner() -> None:
    workflow = from_spec(ARGS.flow)
    runner = open_runner(max_concurrency=ARGS.concurrency, lease=ARGS.lease)
    emit(event="runner_open", pid=os.getpid())
    handles = [runner.start(workflow, {"key": f"k{i}", "acc": []}) for i in range(ARGS.runs)]
    emit(event="started", run_ids=[h.run_id for h in handles])
    for handle in handles:
        emit(event="finished", **summary(handle.wait(timeout=ARGS.timeout)))
    if ARGS.again:  # the engine still works
        handle = runner.start(workflow, {"key": "again", "acc": []})
        emit(event="again", **summary(handle.wait(timeout=ARGS.timeout)))
    time.sleep(ARGS.hold)
    runner.close()
    emit(event="closed", warnings=WARNINGS)


def follower() -> None:
    from_spec(ARGS.flow)
    runner = open_runner(max_concurrency=ARGS.concurrency, lease=ARGS.lease)
    emit(event="runner_open", pid=os.getpid())
    threads = []
    for line in sys.stdin:
        run_id = line.strip()
        if run_id == "DONE":
            break
        if ARGS.waiters == 1:
            emit(event="finished", **summary(RunHandle(runner, run_id).wait(timeout=ARGS.timeout)))
            continue
        # --waiters threads wait for the run at once; the first to see it final reports.
        results: list = []
        failures: list = []
        lock = threading.Lock()

        def wait(run_id=run_id, results=results, failures=failures, lock=lock) -> None:
            try:
                result = RunHandle(runner, run_id).wait(timeout=ARGS.timeout)
            except BaseException as exc:
                with lock:
                    failures.append(exc)
                return
            with lock:
                results.append(result)

        group = [threading.Thread(target=wait) for _ in range(ARGS.waiters)]
        for thread in group:
            thread.start()
        threads.append((group, results, failures))
    for group, results, failures in threads:
        for thread in group:
            thread.join()
        if failures:
            raise failures[0]
        emit(event="finished", **summary(results[0]))
    runner.close()
    emit(event="closed", warnings=WARNINGS)


def race() -> None:
    workflow = from_spec(ARGS.flow)
    while time.time() < ARGS.start_at:  # several processes open at the same moment
        pass
    began = time.monotonic()
    runner = open_runner(max_concurrency=ARGS.concurrency)
    opened = time.monotonic() - began
    result = runner.run(workflow, {"key": f"race-{os.getpid()}", "i": 1})
    runner.close()
    emit(event="done", status=result.status, open_seconds=opened, warnings=WARNINGS)


def submit() -> None:
    workflow = from_spec(ARGS.flow)
    runner = open_runner(max_concurrency=0)
    emit(event="runner_open", pid=os.getpid())
    extra = {"gate": ARGS.gate} if ARGS.gate else {}
    handles = {
        f"q{i:03d}": runner.start(workflow, {"key": f"q{i:03d}", **extra}) for i in range(ARGS.runs)
    }
    emit(event="queued", run_ids={key: h.run_id for key, h in handles.items()})
    deadline = time.monotonic() + ARGS.timeout
    statuses = {}
    for key, handle in handles.items():
        result = handle.wait(timeout=max(deadline - time.monotonic(), 0.1))
        statuses[key] = result.status
    emit(event="finished", statuses=statuses, warnings=WARNINGS)
    runner.close()


def open_only() -> None:
    began = time.monotonic()
    try:
        runner = open_runner()
    except BaseException as exc:
        emit(
            event="error",
            type=type(exc).__name__,
            bases=[c.__name__ for c in type(exc).__mro__],
            str=str(exc),
            repr=repr(exc),
            traceback="".join(traceback.format_exception(exc)),
            seconds=time.monotonic() - began,
        )
        return
    emit(event="opened", seconds=time.monotonic() - began, url=runner.url, repr=repr(runner))
    runner.close()


MODES = {
    "load": load,
    "reader": reader,
    "owner": owner,
    "follower": follower,
    "race": race,
    "submit": submit,
    "open": open_only,
}


def main() -> int:
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=sorted(MODES))
    p.add_argument("--db", required=True)
    p.add_argument("--schema", default=None)
    p.add_argument("--flow", default="small:pg_small:3:0")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--tag", default="r")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--waiters", type=int, default=1, help="follower: threads waiting per run")
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--again", action="store_true")
    p.add_argument("--hold", type=float, default=0.0)
    p.add_argument("--start-at", type=float, default=0.0)
    p.add_argument("--gate", default="", help="submit: the runs' first task waits for this file")
    p.add_argument("--timeout", type=float, default=60.0)
    ARGS = p.parse_args()

    logging.basicConfig(
        level=logging.DEBUG if ARGS.mode == "open" else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("cloacina").addHandler(_Collect())
    try:
        MODES[ARGS.mode]()
    except BaseException as exc:
        emit(
            event="error", type=type(exc).__name__, error=str(exc), traceback=traceback.format_exc()
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
