#!/usr/bin/env python3
"""DBOS Transact's side of the benchmark: its SQLite system database (offline), or with
--system-db-url a PostgreSQL one (bench/postgres.py).

Run by bench/run.py as its own subprocess: DBOS keeps process-global state (one DBOS()
per process, workflows registered before launch). Same workloads and task body as the
cloacina side; DBOS has no task DAG, so the shapes map like this:

  W1  chain       one workflow calling N steps one after another
  W2  fan-out/in  three variants, the fastest one is reported as W2:
                    seq    one workflow: root step, N steps one after another, join step
                    async  async workflow: root step, N async steps under asyncio.gather, join
                    child  one workflow: root step, N child workflows (one step each) started
                           with DBOS.start_workflow, their results, join step
  W3  many small  N workflows of 3 steps, one after another
  W4  concurrent  N workflows of 5 steps started at once with DBOS.start_workflow, then
                  get_result on every handle
  W5  async       the async variant of W2 (the same measurement)
  --scale adds W1 with --scale-chain steps and W2 with --scale-fan steps (variants from
  --scale-variants; the child variant is too slow at 10,000 to run by default).

Before each workload one untimed run warms up. After every repetition the system
database is read (sqlite3, or psycopg on PostgreSQL): the workflow_status rows added must
all be SUCCESS and as many as the workflows the repetition ran, and the operation_outputs
rows added must be at least the steps it ran. --workloads runs a subset (W1,W2,W3,W4).

Writes JSON to --out after every workload; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib
from benchlib import log, rep_line, rep_record, summarize

VARIANTS = ("seq", "async", "child")


def define(DBOS: Any) -> dict[str, Callable]:
    """Registers the steps and workflows (must happen before DBOS.launch())."""

    @DBOS.step()
    def inc(x: int) -> int:
        return x + 1

    @DBOS.step()
    async def inc_async(x: int) -> int:
        return x + 1

    @DBOS.step()
    def join(xs: list) -> int:
        return sum(xs)

    @DBOS.step()
    async def join_async(xs: list) -> int:
        return sum(xs)

    @DBOS.workflow()
    def chain(n: int) -> int:
        x = 0
        for _ in range(n):
            x = inc(x)
        return x

    @DBOS.workflow()
    def fan_seq(n: int) -> int:
        x = inc(0)
        branches = [inc(x) for _ in range(n)]
        return join(branches)

    @DBOS.workflow()
    async def fan_async(n: int) -> int:
        x = await inc_async(0)
        branches = await asyncio.gather(*(inc_async(x) for _ in range(n)))
        return await join_async(list(branches))

    @DBOS.workflow()
    def one_step(x: int) -> int:
        return inc(x)

    @DBOS.workflow()
    def fan_child(n: int) -> int:
        x = inc(0)
        handles = [DBOS.start_workflow(one_step, x) for _ in range(n)]
        return join([h.get_result() for h in handles])

    @DBOS.workflow()
    def chain3(x: int) -> int:
        return inc(inc(inc(x)))

    @DBOS.workflow()
    def chain5(x: int) -> int:
        for _ in range(5):
            x = inc(x)
        return x

    return {
        "chain": chain,
        "fan_seq": fan_seq,
        "fan_async": fan_async,
        "fan_child": fan_child,
        "chain3": chain3,
        "chain5": chain5,
        "DBOS": DBOS,
    }


class Counter:
    """Row counts of the system database, for before/after deltas around a repetition."""

    def __init__(self, db: str):
        self.db = db

    def __call__(self) -> tuple[int, int, int]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            wf = con.execute("SELECT count(*) FROM workflow_status").fetchone()[0]
            ok = con.execute(
                "SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'"
            ).fetchone()[0]
            ops = con.execute("SELECT count(*) FROM operation_outputs").fetchone()[0]
        finally:
            con.close()
        return wf, ok, ops


class PgCounter:
    """Counter for a PostgreSQL system database (DBOS's tables in its `dbos` schema), plus
    the server's next transaction id: its difference counts the write transactions (and
    writing subtransactions, and NOTIFYs) begun in between, all clients together."""

    def __init__(self, url: str, schema: str = "dbos"):
        self.url = url
        self.schema = schema

    def __call__(self) -> tuple[int, ...]:
        import psycopg  # a dependency of DBOS on PostgreSQL

        s = self.schema
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as con:
            return con.execute(
                f"SELECT (SELECT count(*) FROM {s}.workflow_status), "
                f"(SELECT count(*) FROM {s}.workflow_status WHERE status = 'SUCCESS'), "
                f"(SELECT count(*) FROM {s}.operation_outputs), "
                "pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
            ).fetchone()


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        pg_url = args.system_db_url
        if pg_url:
            self.db = None
            system_database_url = pg_url
        else:
            if not args.dbdir:
                raise SystemExit("--dbdir is required without --system-db-url")
            self.dir = os.path.abspath(args.dbdir)
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            self.db = os.path.join(self.dir, "dbos-sys.sqlite")
            system_database_url = f"sqlite:///{self.db}"
        from dbos import DBOS

        DBOS(
            config={
                "name": "cloacina-bench",
                "system_database_url": system_database_url,
                "log_level": "WARNING",
            }
        )
        self.fns = define(DBOS)
        DBOS.launch()
        self.count = PgCounter(pg_url) if pg_url else Counter(self.db)
        self.out: dict[str, Any] = {
            "engine": "dbos",
            "version": metadata.version("dbos"),
            "system_database": "postgresql" if pg_url else "sqlite",
            "sqlite_version": sqlite3.sqlite_version,
            "python": sys.version.split()[0],
            "sqlite_mode": None if pg_url else self.sqlite_mode(),
            "workloads": {},
            "scale": {},
        }

    def sqlite_mode(self) -> str:
        """journal_mode of the system database file and the synchronous setting a connection
        gets by default (DBOS sets neither, so its connections run with these)."""
        con = sqlite3.connect(self.db)
        try:
            journal = con.execute("PRAGMA journal_mode").fetchone()[0].upper()
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[
                con.execute("PRAGMA synchronous").fetchone()[0]
            ]
        finally:
            con.close()
        return f"{journal}+{sync}"

    def save(self) -> None:
        benchlib.write_json(self.args.out, self.out)

    def measure(
        self,
        name: str,
        fn: Callable[[], Any],
        expect_result: Any,
        workflows: int,
        steps: int,
        warmup: bool,
    ) -> tuple[list[dict[str, Any]], str | None]:
        reps: list[dict[str, Any]] = []
        try:
            if warmup:
                fn()
            for rep in range(self.args.reps):
                before = self.count()
                t0 = time.perf_counter()
                result = fn()
                seconds = time.perf_counter() - t0
                after = self.count()
                deltas = [a - b for a, b in zip(after, before, strict=True)]
                d_wf, d_ok, d_ops = deltas[:3]
                problems = []
                if result != expect_result:
                    problems.append(f"result {result!r}, expected {expect_result!r}")
                if d_wf != workflows or d_ok != workflows:
                    problems.append(
                        f"workflow_status: +{d_wf} rows, +{d_ok} SUCCESS, expected +{workflows}"
                    )
                if d_ops < steps:
                    problems.append(f"operation_outputs: +{d_ops} rows, expected >= {steps}")
                rows = {"new_workflow_rows": d_wf, "new_success_rows": d_ok, "new_step_rows": d_ops}
                if len(deltas) > 3:  # PostgreSQL: transaction ids used by the repetition
                    rows["xids"] = deltas[3]
                rec = rep_record(seconds, problems, rows)
                reps.append(rec)
                log(rep_line(name, rep, rec, result))
            return reps, None
        except Exception as e:
            err = benchlib.describe_exception(e)
            log(f"  {name} FAILED: {err}")
            return reps, err

    def wanted(self, key: str) -> bool:
        return not self.args.workloads or key in self.args.workloads.split(",")

    def simple(
        self,
        section: str,
        key: str,
        label: str,
        fn: Callable[[], Any],
        expect: Any,
        runs: int,
        tasks: int,
        warmup: bool,
    ) -> None:
        if not self.wanted(key):
            return
        name = f"{key}{'_scale' if section == 'scale' else ''}"
        log(f"dbos {name}: {label}")
        reps, err = self.measure(name, fn, expect, runs, tasks, warmup)
        self.out[section][key] = summarize(tasks, runs, reps, self.args.reps, err, label=label)
        self.save()

    def fan(self, section: str, n: int, variants: list[str], warmup: bool) -> None:
        if not self.wanted("W2"):
            return
        f = self.fns
        calls = {
            "seq": (lambda: f["fan_seq"](n), 1),
            "async": (lambda: asyncio.run(f["fan_async"](n)), 1),
            "child": (lambda: f["fan_child"](n), n + 1),
        }
        results: dict[str, Any] = {}
        for v in variants:
            fn, workflows = calls[v]
            name = f"W2_{v}{'_scale' if section == 'scale' else ''}"
            label = f"fan-out/in 1+{n}+1 ({v})"
            log(f"dbos {name}: {label}")
            reps, err = self.measure(name, fn, 2 * n, workflows, n + 2, warmup)
            results[v] = summarize(
                n + 2, workflows, reps, self.args.reps, err, label=label, variant=v
            )
        valid = {v: r for v, r in results.items() if r["valid"]}
        pool = valid or results
        best = min(pool, key=lambda v: pool[v]["median_s"] if pool[v]["median_s"] else float("inf"))
        w2 = dict(results[best])
        w2["label"] = f"fan-out/in 1+{n}+1, fastest variant: {best}"
        w2["variants"] = results
        self.out[section]["W2"] = w2
        if section == "workloads" and "async" in results:
            w5 = dict(results["async"])
            w5["label"] = f"async fan-out/in 1+{n}+1 (= the W2 async variant)"
            self.out[section]["W5"] = w5
        self.save()

    def run(self) -> None:
        a, f = self.args, self.fns
        self.save()

        def w3() -> int:
            return sum(f["chain3"](0) for _ in range(a.runs))

        def w4() -> int:
            handles = [f["DBOS"].start_workflow(f["chain5"], 0) for _ in range(a.concurrent)]
            return sum(h.get_result() for h in handles)

        # warm-up as the first thing any DBOS process does (compiles SQL, fills pools)
        f["chain3"](0)
        f["chain"](5)
        self.simple(
            "workloads",
            "W1",
            f"chain of {a.chain} steps",
            lambda: f["chain"](a.chain),
            a.chain,
            1,
            a.chain,
            True,
        )
        self.fan("workloads", a.fan, a.variants.split(","), True)
        self.simple(
            "workloads",
            "W3",
            f"{a.runs} sequential workflows of 3 steps",
            w3,
            3 * a.runs,
            a.runs,
            3 * a.runs,
            True,
        )
        self.simple(
            "workloads",
            "W4",
            f"{a.concurrent} concurrent workflows of 5 steps",
            w4,
            5 * a.concurrent,
            a.concurrent,
            5 * a.concurrent,
            True,
        )
        if a.scale:
            self.simple(
                "scale",
                "W1",
                f"chain of {a.scale_chain} steps",
                lambda: f["chain"](a.scale_chain),
                a.scale_chain,
                1,
                a.scale_chain,
                False,
            )
            self.fan("scale", a.scale_fan, a.scale_variants.split(","), False)
        f["DBOS"].destroy()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dbdir", help="a directory of its own (wiped first), for SQLite")
    ap.add_argument(
        "--system-db-url",
        default=None,
        help="a PostgreSQL URL for DBOS's system database instead of an SQLite file",
    )
    ap.add_argument(
        "--workloads", default=None, help="comma-separated subset of W1,W2,W3,W4 (default: all)"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--chain", type=int, default=100)
    ap.add_argument("--fan", type=int, default=200)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--scale", action="store_true")
    ap.add_argument("--scale-chain", type=int, default=2000)
    ap.add_argument("--scale-fan", type=int, default=10000)
    ap.add_argument("--scale-variants", default="seq,async")
    args = ap.parse_args()
    for v in args.variants.split(",") + args.scale_variants.split(","):
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}; choose from {VARIANTS}")
    Bench(args).run()
    sys.exit(0)


if __name__ == "__main__":
    main()
