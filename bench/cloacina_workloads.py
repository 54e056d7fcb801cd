#!/usr/bin/env python3
"""cloacina's side of the benchmark, run by bench/run.py as a subprocess (one per durability mode).

Workloads (every task body: add 1 to an int read from the context):
  W1  chain          one run of N sequential tasks                          (--chain, 100)
  W2  fan-out/in     root -> N independent tasks -> join, one run           (--fan, 200)
  W3  many small     N runs, one after another, of a 3-task chain           (--runs, 200)
  W4  concurrent     N runs of a 5-task chain: runner.start x N, then wait   (--concurrent, 100)
  W5  async fan      W2 with `async def` tasks
  W4old              W4 on a file already holding --old-runs (100000) completed runs
  W4 and W4old also report resident memory: before, at the peak during, and after the reps.
  --scale adds W1 with --scale-chain (2000) tasks and W2 with --scale-fan (10000) tasks.

Each workload gets its own fresh database file and Runner. Before the timed repetitions
one untimed run of the workload's workflow warms the engine up. After every repetition
the database file is opened with Python's sqlite3 and the runs of that repetition are
counted: every run must be 'completed' in `runs` and every one of its tasks 'completed'
in `run_tasks`, else the repetition (and so the workload) is invalid.

Writes its results as JSON to --out after every workload (so a hang or crash still leaves
what finished). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
from benchlib import log, rep_line, rep_record, summarize

# ---------------------------------------------------------------------------------------
# Task factories. Ids are global in cloacina (a later definition under an id replaces the
# earlier one), so every workload uses its own prefix.


def _define(tid: str, deps: list[str], fn: Callable) -> Any:
    from cloacina import task

    fn.__name__ = fn.__qualname__ = tid
    return task(id=tid, dependencies=deps)(fn) if deps else task(id=tid)(fn)


def _inc_body(is_async: bool) -> Callable:
    if is_async:

        async def body(ctx):
            ctx["x"] = ctx.get("x", 0) + 1

    else:

        def body(ctx):
            ctx["x"] = ctx.get("x", 0) + 1

    return body


def _branch_body(key: str, is_async: bool) -> Callable:
    if is_async:

        async def body(ctx):
            ctx[key] = ctx["x"] + 1

    else:

        def body(ctx):
            ctx[key] = ctx["x"] + 1

    return body


def _join_body(keys: list[str], is_async: bool) -> Callable:
    if is_async:

        async def body(ctx):
            ctx["sum"] = sum(ctx[k] for k in keys)

    else:

        def body(ctx):
            ctx["sum"] = sum(ctx[k] for k in keys)

    return body


def chain_workflow(name: str, prefix: str, n: int, is_async: bool = False):
    from cloacina import Workflow

    tasks = [
        _define(f"{prefix}{i}", [f"{prefix}{i - 1}"] if i else [], _inc_body(is_async))
        for i in range(n)
    ]
    return Workflow(name, tasks)


def w4_workflow():
    return chain_workflow("bench_w4_chain_5", "w4_c", 5)


def fan_workflow(name: str, prefix: str, n: int, is_async: bool = False):
    from cloacina import Workflow

    root_id = f"{prefix}root"
    root = _define(root_id, [], _inc_body(is_async))
    keys = [f"v{i}" for i in range(n)]
    branches = [
        _define(f"{prefix}b{i}", [root_id], _branch_body(keys[i], is_async)) for i in range(n)
    ]
    join = _define(f"{prefix}join", [f"{prefix}b{i}" for i in range(n)], _join_body(keys, is_async))
    return Workflow(name, [root, *branches, join])


# ---------------------------------------------------------------------------------------
# Checks


def count_persisted(db_path: str, run_ids: list[str]) -> tuple[int, int]:
    """Completed runs, and completed run_tasks rows, among run_ids, read from the file."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    runs = tasks = 0
    try:
        for i in range(0, len(run_ids), 400):
            chunk = run_ids[i : i + 400]
            marks = ",".join("?" * len(chunk))
            runs += con.execute(
                f"SELECT count(*) FROM runs WHERE status = 'completed' AND run_id IN ({marks})",
                chunk,
            ).fetchone()[0]
            tasks += con.execute(
                "SELECT count(*) FROM run_tasks WHERE status = 'completed'"
                f" AND run_id IN ({marks})",
                chunk,
            ).fetchone()[0]
    finally:
        con.close()
    return runs, tasks


def check_rep(
    db_path: str,
    results: list,
    n_runs: int,
    tasks_per_run: int,
    expect: dict[str, int],
    count: Callable[[str, list[str]], tuple[int, int]] = count_persisted,
) -> tuple[list[str], dict[str, Any]]:
    """The repetition's problems (none: it counts) and its rows found in the database.
    `count(db, run_ids)` reads the completed runs and task rows (PostgreSQL passes its own)."""
    problems: list[str] = []
    if len(results) != n_runs:
        problems.append(f"{len(results)} results for {n_runs} runs")
    bad_status = [r.status for r in results if r.status != "completed"]
    if bad_status:
        problems.append(f"{len(bad_status)} runs not completed (e.g. {bad_status[0]!r})")
    for r in results:
        if r.status != "completed":
            continue
        for key, want in expect.items():
            try:
                got = r.context[key]
            except Exception as e:
                problems.append(f"context[{key!r}] unreadable: {benchlib.describe_exception(e)}")
                break
            if got != want:
                problems.append(f"context[{key!r}] = {got!r}, expected {want!r}")
                break
        if problems:
            break
    run_ids = [str(r.run_id) for r in results]
    if len(set(run_ids)) != len(run_ids):
        problems.append("duplicate run ids")
    runs_done, tasks_done = count(db_path, run_ids)
    rows = {"runs_completed": runs_done, "task_rows_completed": tasks_done}
    if runs_done != n_runs:
        problems.append(f"runs table: {runs_done} completed, expected {n_runs}")
    if tasks_done != n_runs * tasks_per_run:
        problems.append(
            f"run_tasks table: {tasks_done} completed, expected {n_runs * tasks_per_run}"
        )
    return problems, rows


# ---------------------------------------------------------------------------------------
# Repetition shapes


def run_once(runner, wf, n_runs: int) -> list:
    return [runner.run(wf, {"x": 0})]


def run_sequential(runner, wf, n_runs: int) -> list:
    return [runner.run(wf, {"x": 0}) for _ in range(n_runs)]


def run_concurrent(runner, wf, n_runs: int) -> list:
    handles = [runner.start(wf, {"x": 0}) for _ in range(n_runs)]
    return [h.wait() for h in handles]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dbdir = os.path.abspath(args.dbdir)
        os.makedirs(self.dbdir, exist_ok=True)
        import cloacina

        self.out: dict[str, Any] = {
            "engine": "cloacina",
            "version": getattr(cloacina, "__version__", None),
            "module_file": getattr(cloacina, "__file__", None),
            "mode": args.mode,
            "durability_kwarg": None if args.mode == "normal" else args.mode,
            "max_concurrency": args.max_concurrency,
            "sqlite_version": sqlite3.sqlite_version,
            "python": sys.version.split()[0],
            "workloads": {},
            "scale": {},
        }

    def runner(self, db_path: str):
        from cloacina import Runner

        kwargs: dict[str, Any] = {}
        if self.args.mode != "normal":  # "normal" is the default: measure what users get
            kwargs["durability"] = self.args.mode
        if self.args.max_concurrency is not None:
            kwargs["max_concurrency"] = self.args.max_concurrency
        return Runner(f"sqlite:///{db_path}", **kwargs)

    def age(self, db_path: str, old_runs: int) -> dict[str, Any]:
        """Fills a new file with `old_runs` completed W4 runs, in a child process (so that
        the filling leaves nothing in this process's memory): 100 run by the engine, the
        rest copied from them in SQL."""
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            f"--mode={self.args.mode}",
            f"--dbdir={self.dbdir}",
            f"--out={self.args.out}",
            f"--old-runs={old_runs}",
            f"--fill={db_path}",
        ]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)
        con = sqlite3.connect(db_path)
        try:
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
            tasks = con.execute("SELECT count(*) FROM run_tasks").fetchone()[0]
        finally:
            con.close()
        # The fill leaves about 100 MB of dirty pages for the kernel to write back; done
        # during the timed repetitions, that writeback slowed W4old's commits by up to
        # 1.5x. Flush it first: what is measured is W4 on a big file, not the fill.
        os.sync()
        seconds = time.perf_counter() - t0
        log(f"  filled {db_path}: {runs:,} runs, {tasks:,} task rows in {seconds:.1f}s")
        return {"runs": runs, "task_rows": tasks, "db_bytes": _db_bytes(db_path)}

    def fill(self, db_path: str, old_runs: int) -> None:
        """The child process of `age`."""
        made = min(100, old_runs)
        runner = self.runner(db_path)
        try:
            run_concurrent(runner, w4_workflow(), made)
        finally:
            runner.close()
        clone_runs(db_path, old_runs // made - 1)

    def save(self) -> None:
        benchlib.write_json(self.args.out, self.out)

    def workload(
        self,
        section: str,
        key: str,
        label: str,
        build: Callable,
        shape: Callable,
        n_runs: int,
        tasks_per_run: int,
        expect: dict[str, int],
        warmup: bool,
        memory: bool = False,
        prepare: Callable[[str, Any], dict[str, Any]] | None = None,
    ) -> None:
        """Runs one workload on a fresh file. `prepare(db_path, wf)`, if given, fills the
        file first and returns what to report about it. With `memory`, the process's
        resident memory is measured before the timed repetitions (after the warm-up),
        at its peak during them (sampled every 5 ms), and after them."""
        if self.args.workloads and key not in self.args.workloads.split(","):
            return
        name = f"{key}{'_scale' if section == 'scale' else ''}"
        db_path = os.path.join(self.dbdir, f"{self.args.mode}-{name}.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db_path + suffix):
                os.remove(db_path + suffix)
        log(f"cloacina[{self.args.mode}] {name}: {label}")
        reps: list[dict[str, Any]] = []
        error = None
        runner = None
        extra: dict[str, Any] = {}
        try:
            wf = build()
            if prepare is not None:
                extra["prepared"] = prepare(db_path, wf)
            runner = self.runner(db_path)
            if warmup:
                runner.run(wf, {"x": 0})
            if memory:
                gc.collect()
                before = benchlib.rss_bytes()
                sampler = benchlib.RssSampler().__enter__()
            for rep in range(self.args.reps):
                t0 = time.perf_counter()
                results = shape(runner, wf, n_runs)
                seconds = time.perf_counter() - t0
                problems, rows = check_rep(db_path, results, n_runs, tasks_per_run, expect)
                rec = rep_record(seconds, problems, rows)
                reps.append(rec)
                log(rep_line(name, rep, rec))
                del results
            if memory:
                sampler.__exit__()
                gc.collect()
                after = benchlib.rss_bytes()
                extra["memory"] = {
                    "rss_before_mb": before / MB,
                    "rss_peak_growth_mb": (sampler.peak - before) / MB,
                    "rss_after_growth_mb": (after - before) / MB,
                }
                log(
                    "  {name} resident memory: {rss_before_mb:.1f} MB before, "
                    "+{rss_peak_growth_mb:.1f} MB at the peak, "
                    "+{rss_after_growth_mb:.1f} MB after".format(name=name, **extra["memory"])
                )
        except Exception as e:
            error = benchlib.describe_exception(e)
            log(f"  {name} FAILED: {error}")
        finally:
            if runner is not None:
                try:
                    runner.close()
                except Exception as e:
                    error = error or f"runner.close(): {benchlib.describe_exception(e)}"
        self.out[section][key] = summarize(
            tasks_per_run * n_runs,
            n_runs,
            reps,
            self.args.reps,
            error,
            label=label,
            db_bytes=_db_bytes(db_path),
            **extra,
        )
        self.save()
        if not self.args.keep_db:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db_path + suffix):
                    os.remove(db_path + suffix)

    def run(self) -> None:
        a = self.args
        warm = True
        self.save()
        self.workload(
            "workloads",
            "W1",
            f"chain of {a.chain} tasks",
            lambda: chain_workflow(f"bench_w1_chain_{a.chain}", "w1_c", a.chain),
            run_once,
            1,
            a.chain,
            {"x": a.chain},
            warm,
        )
        self.workload(
            "workloads",
            "W2",
            f"fan-out/in 1+{a.fan}+1",
            lambda: fan_workflow(f"bench_w2_fan_{a.fan}", "w2_", a.fan),
            run_once,
            1,
            a.fan + 2,
            {"x": 1, "sum": 2 * a.fan},
            warm,
        )
        self.workload(
            "workloads",
            "W3",
            f"{a.runs} sequential runs of a 3-task chain",
            lambda: chain_workflow("bench_w3_chain_3", "w3_c", 3),
            run_sequential,
            a.runs,
            3,
            {"x": 3},
            warm,
        )
        self.workload(
            "workloads",
            "W4",
            f"{a.concurrent} concurrent runs of a 5-task chain",
            w4_workflow,
            run_concurrent,
            a.concurrent,
            5,
            {"x": 5},
            warm,
            memory=True,
        )
        if a.old_runs:
            self.workload(
                "workloads",
                "W4old",
                f"W4 on a file holding {a.old_runs:,} old runs",
                w4_workflow,
                run_concurrent,
                a.concurrent,
                5,
                {"x": 5},
                warm,
                memory=True,
                prepare=lambda db, wf: self.age(db, a.old_runs),
            )
        self.workload(
            "workloads",
            "W5",
            f"async fan-out/in 1+{a.fan}+1",
            lambda: fan_workflow(f"bench_w5_async_fan_{a.fan}", "w5_", a.fan, is_async=True),
            run_once,
            1,
            a.fan + 2,
            {"x": 1, "sum": 2 * a.fan},
            warm,
        )
        if a.scale:
            # The engine is warm by now; a warm-up run at these sizes would only double the cost.
            self.workload(
                "scale",
                "W1",
                f"chain of {a.scale_chain} tasks",
                lambda: chain_workflow(f"bench_s1_chain_{a.scale_chain}", "s1_c", a.scale_chain),
                run_once,
                1,
                a.scale_chain,
                {"x": a.scale_chain},
                False,
            )
            self.workload(
                "scale",
                "W2",
                f"fan-out/in 1+{a.scale_fan}+1",
                lambda: fan_workflow(f"bench_s2_fan_{a.scale_fan}", "s2_", a.scale_fan),
                run_once,
                1,
                a.scale_fan + 2,
                {"x": 1, "sum": 2 * a.scale_fan},
                False,
            )


MB = 1024 * 1024


def clone_runs(db_path: str, copies: int) -> None:
    """Adds `copies` copies of every run in the file (its tasks and attempts too), each
    under a new run id and dated earlier, straight in SQL: a file with many old runs in
    seconds. Columns are read from the schema, so the copies are exact."""
    con = sqlite3.connect(db_path)
    try:
        con.execute("CREATE TEMP TABLE copy_no (n INTEGER PRIMARY KEY)")
        con.executemany("INSERT INTO copy_no VALUES (?)", [(n,) for n in range(1, copies + 1)])
        con.execute("CREATE TEMP TABLE template AS SELECT run_id FROM runs")
        renamed = {
            "run_id": "t.run_id || '-old-' || copy_no.n",
            "idempotency_key": "NULL",
            "created_at": "t.created_at - copy_no.n * 1000000",
            "started_at": "t.started_at - copy_no.n * 1000000",
            "finished_at": "t.finished_at - copy_no.n * 1000000",
        }
        with con:
            for table in ("runs", "run_tasks", "earlier_attempts"):
                cols = [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
                select = ", ".join(renamed.get(c, f"t.{c}") for c in cols)
                con.execute(
                    f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} "
                    f"FROM {table} AS t JOIN template USING (run_id), copy_no"
                )
    finally:
        con.close()


def _db_bytes(path: str) -> int | None:
    try:
        return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--mode",
        choices=["normal", "full"],
        default="normal",
        help="normal = the Runner's default durability; full = durability='full'",
    )
    ap.add_argument("--dbdir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--fan", type=int, default=200)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--scale", action="store_true")
    ap.add_argument("--scale-chain", type=int, default=2000)
    ap.add_argument("--scale-fan", type=int, default=10000)
    ap.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="passed to Runner(); default: the Runner's own default",
    )
    ap.add_argument(
        "--old-runs",
        type=int,
        default=100_000,
        help="W4old: W4 again on a file already holding this many runs (0: skip)",
    )
    ap.add_argument(
        "--workloads",
        default=None,
        help="comma-separated subset of W1,W2,W3,W4,W4old,W5 (default: all)",
    )
    ap.add_argument("--keep-db", action="store_true")
    ap.add_argument("--fill", metavar="DB", help=argparse.SUPPRESS)  # W4old's child process
    args = ap.parse_args()
    if args.fill:
        Bench(args).fill(args.fill, args.old_runs)
    else:
        Bench(args).run()


if __name__ == "__main__":
    main()
