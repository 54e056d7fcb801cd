#!/usr/bin/env python3
"""cloacina's side of the PostgreSQL benchmark: the processes bench/postgres.py starts.

    python bench/pg_workloads.py ROLE --url URL --schema NAME [options]

Roles:
  workloads  W1, W3 and W4 as bench/cloacina_workloads.py defines them, in this process,
             each on a new schema (NAME_w1, ...) with a new Runner; writes --out (JSON)
  engine     one engine of the W4 engines test: a Runner on NAME, then answers lines on
             stdin: "GO n" runs W4's shape with n runs (start x n, then wait on each) and
             replies with its start and end (time.time()) and the checks; "QUIT" ends
  serve      a serving worker: defines the benchmark's workflows and calls
             Runner(...).serve() until SIGTERM
  queue      a submit-only client (max_concurrency=0): W4's shape through the queue
             (--runs runs submitted, then waited for), one untimed rep then --reps timed;
             which engine drove each run is read from the runs' owner column
  latency    a submit-only client: --samples runs of a one-task workflow, one at a time;
             the task records time.time() in the context; latency = that - the time just
             before `start()` (same host, same clock)
  driver     the takeover driver: starts --hold-runs runs of the takeover workflow and holds
             them (their first task sleeps when it runs in this process) until SIGKILLed

Talks to bench/postgres.py with lines "MSG <json>" on stdout; progress goes to stderr.
Every repetition is checked outside its timing like the SQLite harness's: each run
`completed` with the right context value, and its rows `completed` in the schema's `runs`
and `run_tasks` tables (read with psycopg).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from benchlib import log, rep_line, rep_record, summarize
from cloacina_workloads import (
    chain_workflow,
    check_rep,
    run_once,
    run_sequential,
    w4_workflow,
)

WAIT_TIMEOUT = 300.0  # seconds a run may take before a wait gives up (a hang, not a number)


def msg(obj: dict[str, Any]) -> None:
    """One message to the orchestrator."""
    print("MSG " + json.dumps(obj), flush=True)


# ---------------------------------------------------------------------------------------
# Checks and database helpers (psycopg)


def pg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def pg_count(url: str, schema: str) -> Callable[[str, list[str]], tuple[int, int]]:
    """check_rep's `count` for a PostgreSQL schema: completed runs and task rows."""

    def count(_db: str, run_ids: list[str]) -> tuple[int, int]:
        with pg_connect(url) as con:
            runs = con.execute(
                f'SELECT count(*) FROM "{schema}".runs WHERE status = %s AND run_id = ANY(%s)',
                ("completed", run_ids),
            ).fetchone()[0]
            tasks = con.execute(
                f'SELECT count(*) FROM "{schema}".run_tasks WHERE status = %s AND run_id = ANY(%s)',
                ("completed", run_ids),
            ).fetchone()[0]
        return runs, tasks

    return count


def owners_of(url: str, schema: str, run_ids: list[str]) -> dict[str, int]:
    """How many of run_ids each engine (owner id) ran tasks of, from run_tasks.owner (who
    ran a task's latest attempt; a finished run's own owner column is cleared)."""
    with pg_connect(url) as con:
        rows = con.execute(
            f"SELECT coalesce(owner, '-'), count(DISTINCT run_id) FROM \"{schema}\".run_tasks "
            "WHERE run_id = ANY(%s) GROUP BY 1 ORDER BY 2 DESC",
            (run_ids,),
        ).fetchall()
    return {owner: n for owner, n in rows}


def next_xid(url: str) -> int:
    """The server's next transaction id: the difference of two readings counts the write
    transactions (and writing subtransactions, and NOTIFYs) begun in between, by every
    client. Read-only transactions take none."""
    with pg_connect(url) as con:
        return con.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        ).fetchone()[0]


def drop_schema(url: str, schema: str) -> None:
    with pg_connect(url) as con:
        con.execute("SET lock_timeout = '10s'")
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# ---------------------------------------------------------------------------------------
# Workflows (task ids are global in cloacina: every workflow has its own prefix)


def latency_workflow():
    from cloacina import Workflow, task

    @task(id="pg_lat_first")
    def pg_lat_first(ctx):
        ctx["t_start"] = time.time()
        ctx["x"] = 1

    return Workflow("bench_pg_latency", [pg_lat_first])


def _mark(directory: str, trial: int, slot: int) -> None:
    """Records that a takeover run's first task started, here and now (atomically)."""
    now = time.time()
    path = os.path.join(directory, f"{trial}-{slot}-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({"t": now, "pid": os.getpid()}, f)
    os.replace(path + ".tmp", path)


def takeover_workflow():
    from cloacina import Workflow, task

    @task(id="pg_to_hold")
    def pg_to_hold(ctx):
        _mark(ctx["mark_dir"], ctx["trial"], ctx["slot"])
        if os.getpid() == ctx["hold_pid"]:
            while True:  # in the driver only, which is SIGKILLed while it sleeps here
                time.sleep(3600)
        ctx["x"] = 1

    @task(id="pg_to_next", dependencies=["pg_to_hold"])
    def pg_to_next(ctx):
        ctx["x"] = ctx["x"] + 1

    return Workflow("bench_pg_takeover", [pg_to_hold, pg_to_next])


def start_and_wait(
    runner, wf, n_runs: int, timeout: float = WAIT_TIMEOUT, starts: dict[str, float] | None = None
) -> list:
    """W4's shape (start x n, then wait on each), with a timeout on every wait; the
    seconds the starts took go into ``starts["seconds"]`` when given."""
    started = time.perf_counter()
    handles = [runner.start(wf, {"x": 0}) for _ in range(n_runs)]
    if starts is not None:
        starts["seconds"] = time.perf_counter() - started
    return [h.wait(timeout=timeout) for h in handles]


def runner_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return {} if a.max_concurrency is None else {"max_concurrency": a.max_concurrency}


# ---------------------------------------------------------------------------------------
# Roles


def role_workloads(a: argparse.Namespace) -> None:
    import cloacina
    from cloacina import Runner

    out: dict[str, Any] = {
        "engine": "cloacina",
        "backend": "postgresql",
        "version": getattr(cloacina, "__version__", None),
        "module_file": getattr(cloacina, "__file__", None),
        "max_concurrency": a.max_concurrency,
        "workloads": {},
    }
    benchlib.write_json(a.out, out)
    starts: dict[str, float] = {}  # W4's start loop, per repetition
    specs = [
        (
            "W1",
            f"chain of {a.chain} tasks",
            lambda: chain_workflow(f"bench_w1_chain_{a.chain}", "w1_c", a.chain),
            run_once,
            1,
            a.chain,
            {"x": a.chain},
        ),
        (
            "W3",
            f"{a.runs} sequential runs of a 3-task chain",
            lambda: chain_workflow("bench_w3_chain_3", "w3_c", 3),
            run_sequential,
            a.runs,
            3,
            {"x": 3},
        ),
        (
            "W4",
            f"{a.concurrent} concurrent runs of a 5-task chain",
            w4_workflow,
            lambda r, wf, n: start_and_wait(r, wf, n, starts=starts),
            a.concurrent,
            5,
            {"x": 5},
        ),
    ]
    wanted = a.workloads.split(",") if a.workloads else None
    for key, label, build, shape, n_runs, per_run, expect in specs:
        if wanted and key not in wanted:
            continue
        schema = f"{a.schema}_{key.lower()}"
        log(f"cloacina[postgres] {key}: {label} (schema {schema})")
        reps: list[dict[str, Any]] = []
        error = None
        runner = None
        try:
            drop_schema(a.url, schema)
            wf = build()
            runner = Runner(a.url, schema=schema, **runner_kwargs(a))
            runner.run(wf, {"x": 0})  # warm-up (also creates the schema's tables)
            count = pg_count(a.url, schema)
            for rep in range(a.reps):
                xid0 = next_xid(a.url)
                t0 = time.perf_counter()
                results = shape(runner, wf, n_runs)
                seconds = time.perf_counter() - t0
                xids = next_xid(a.url) - xid0
                problems, rows = check_rep(schema, results, n_runs, per_run, expect, count=count)
                rows["xids"] = xids
                if "seconds" in starts:  # W4: what a start() cost, runs in flight
                    rows["start_ms_each"] = round(1000 * starts.pop("seconds") / n_runs, 4)
                rec = rep_record(seconds, problems, rows)
                reps.append(rec)
                log(rep_line(key, rep, rec))
        except Exception as e:
            error = benchlib.describe_exception(e)
            log(f"  {key} FAILED: {error}")
        finally:
            if runner is not None:
                try:
                    runner.close()
                except Exception as e:
                    error = error or f"runner.close(): {benchlib.describe_exception(e)}"
        out["workloads"][key] = summarize(
            per_run * n_runs, n_runs, reps, a.reps, error, label=label, schema=schema
        )
        benchlib.write_json(a.out, out)


def role_engine(a: argparse.Namespace) -> None:
    from cloacina import Runner

    wf = w4_workflow()
    runner = Runner(a.url, schema=a.schema, **runner_kwargs(a))
    try:
        runner.run(wf, {"x": 0})  # warm-up
        count = pg_count(a.url, a.schema)
        msg({"ready": True, "pid": os.getpid()})
        while True:
            line = sys.stdin.readline()
            words = line.split()
            if not words or words[0] == "QUIT":
                break
            n = int(words[1])
            error = None
            t0 = time.time()
            p0 = time.perf_counter()
            try:
                results = start_and_wait(runner, wf, n)
            except Exception as e:
                results, error = [], benchlib.describe_exception(e)
            seconds = time.perf_counter() - p0
            t1 = time.time()
            if error is None:
                problems, rows = check_rep(a.schema, results, n, 5, {"x": 5}, count=count)
            else:
                problems, rows = [error], {}
            msg({"t0": t0, "t1": t1, "seconds": seconds, "problems": problems, "rows": rows})
    finally:
        runner.close()


def role_serve(a: argparse.Namespace) -> None:
    from cloacina import Runner

    # serve() claims runs of the workflows defined (registered at construction) here
    workflows = [latency_workflow(), takeover_workflow(), w4_workflow()]
    runner = Runner(a.url, schema=a.schema, **runner_kwargs(a))
    msg({"ready": True, "pid": os.getpid(), "workflows": [w.name for w in workflows]})
    runner.serve()  # until SIGTERM: drains, then closes the runner


def role_queue(a: argparse.Namespace) -> None:
    from cloacina import Runner

    wf = w4_workflow()
    client = Runner(a.url, schema=a.schema, max_concurrency=0)
    reps: list[dict[str, Any]] = []
    split: list[dict[str, int]] = []
    error = None
    try:
        start_and_wait(client, wf, a.runs)  # warm-up
        count = pg_count(a.url, a.schema)
        for rep in range(a.reps):
            t0 = time.perf_counter()
            results = start_and_wait(client, wf, a.runs)
            seconds = time.perf_counter() - t0
            problems, rows = check_rep(a.schema, results, a.runs, 5, {"x": 5}, count=count)
            owners = owners_of(a.url, a.schema, [str(r.run_id) for r in results])
            rows["engines"] = len(owners)
            split.append(owners)
            rec = rep_record(seconds, problems, rows)
            reps.append(rec)
            log(rep_line(f"W4q x{a.workers}", rep, rec))
    except Exception as e:
        error = benchlib.describe_exception(e)
        log(f"  W4q FAILED: {error}")
    finally:
        client.close()
    out = summarize(5 * a.runs, a.runs, reps, a.reps, error, runs_per_engine=split)
    msg({"result": out})


def stages(url: str, schema: str, run_id: str, t_submit: float, result) -> dict[str, float]:
    """Where a latency sample's time went, from the run's stored times (one host, one
    clock; read after the run, outside the measurement): the run row's created_at (the
    submitting engine's clock), its started_at (set by the claim, the database's clock)
    and the task's started_at (the serving engine's StartTask)."""
    with pg_connect(url) as con:
        row = con.execute(
            f'SELECT r.created_at, r.started_at, t.started_at FROM "{schema}".runs r '
            f'JOIN "{schema}".run_tasks t USING (run_id) WHERE r.run_id = %s',
            (run_id,),
        ).fetchone()
    if row is None or None in row:
        return {}
    created, claimed, task = (x / 1e6 for x in row)
    return {
        "to_created_ms": 1000 * (created - t_submit),
        "created_to_claimed_ms": 1000 * (claimed - created),
        "claimed_to_task_ms": 1000 * (task - claimed),
        "task_to_body_ms": 1000 * (result.context["t_start"] - task),
    }


def role_latency(a: argparse.Namespace) -> None:
    from cloacina import Runner

    wf = latency_workflow()
    client = Runner(a.url, schema=a.schema, max_concurrency=0)
    samples: list[dict[str, float]] = []
    problems: list[str] = []
    run_ids: list[str] = []
    error = None
    try:
        for i in range(a.warmup + a.samples):
            time.sleep(a.gap)  # the worker settles (idle, as when a run arrives out of the blue)
            t_submit = time.time()
            handle = client.start(wf, {"x": 0})
            t_returned = time.time()
            result = handle.wait(timeout=60)
            run_ids.append(str(result.run_id))
            if result.status != "completed" or "t_start" not in result.context:
                problems.append(f"run {result.run_id}: {result.status}")
                continue
            if i >= a.warmup:
                sample = {
                    "latency_ms": 1000 * (result.context["t_start"] - t_submit),
                    "submit_ms": 1000 * (t_returned - t_submit),
                }
                sample.update(stages(a.url, a.schema, str(result.run_id), t_submit, result))
                samples.append(sample)
        runs_done, tasks_done = pg_count(a.url, a.schema)("", run_ids)
        if runs_done != len(run_ids) or tasks_done != len(run_ids):
            problems.append(
                f"{runs_done} completed runs and {tasks_done} task rows for {len(run_ids)} runs"
            )
        owners = owners_of(a.url, a.schema, run_ids)
    except Exception as e:
        error = benchlib.describe_exception(e)
        owners = {}
    finally:
        client.close()
    msg({"samples": samples, "problems": problems, "error": error, "owners": owners})


def role_driver(a: argparse.Namespace) -> None:
    from cloacina import Runner

    wf = takeover_workflow()
    runner = Runner(a.url, schema=a.schema)
    handles = [
        runner.start(
            wf,
            {"trial": a.trial, "slot": slot, "mark_dir": a.mark_dir, "hold_pid": os.getpid()},
        )
        for slot in range(a.hold_runs)
    ]
    msg({"run_ids": [h.run_id for h in handles], "pid": os.getpid()})
    while True:  # until SIGKILLed (or the orchestrator's cleanup)
        time.sleep(3600)


ROLES = {
    "workloads": role_workloads,
    "engine": role_engine,
    "serve": role_serve,
    "queue": role_queue,
    "latency": role_latency,
    "driver": role_driver,
}


def die_with_parent() -> None:
    """Linux: SIGTERM when bench/postgres.py dies, even SIGKILLed (a serving worker would
    otherwise serve forever)."""
    parent = os.environ.get("CLOACINA_BENCH_PARENT")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the prctl
        sys.exit(1)


def main() -> None:
    die_with_parent()
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("role", choices=sorted(ROLES))
    ap.add_argument("--url", required=True, help="the server's URL (no schema)")
    ap.add_argument("--schema", required=True, help="schema (prefix, for workloads)")
    ap.add_argument("--out", help="workloads: the JSON file written")
    ap.add_argument("--workloads", default=None, help="workloads: subset of W1,W3,W4")
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--runs", type=int, default=200, help="W3 runs; queue: runs per rep")
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1, help="queue: serving workers (a label)")
    ap.add_argument("--samples", type=int, default=200, help="latency: timed samples")
    ap.add_argument("--warmup", type=int, default=5, help="latency: untimed samples first")
    ap.add_argument("--gap", type=float, default=0.02, help="latency: pause between samples")
    ap.add_argument("--trial", type=int, default=0, help="driver: the trial's number")
    ap.add_argument("--mark-dir", help="driver: where the takeover task marks its starts")
    ap.add_argument("--hold-runs", type=int, default=1, help="driver: runs it starts and holds")
    ap.add_argument("--max-concurrency", type=int, default=None)
    a = ap.parse_args()
    ROLES[a.role](a)


if __name__ == "__main__":
    main()
