#!/usr/bin/env python3
"""cloacina on PostgreSQL: workloads, two engines, the queue, latency and takeover, next to
DBOS Transact on the same server, the server's own one-row commit (pgbench) and the SQL
floor of W1 and W3 (their statements from pgbench: pg_floor.py), in one invocation. See
bench/README.md ("PostgreSQL").

    python bench/postgres.py              # everything, default sizes (starts its own server)
    python bench/postgres.py --quick      # small sizes: a smoke test of the harness
    python bench/postgres.py --pg-url postgresql://user@host:5432/db   # an existing server
    python bench/postgres.py --only pgbench,cloacina,dbos              # a subset

Unless --pg-url is given, a throwaway server is started (python/tests/pg_server.py) with
durable settings (fsync=on, synchronous_commit=on, full_page_writes=on), its data directory
under --workdir (the disk the SQLite harness measures), and removed afterwards. Every
engine runs in its own subprocess; all children and the server are stopped on the way out,
whatever happens. Prints the tables and writes bench/results/pg-latest.json plus a
timestamped copy. Exit status 0 when everything asked for ran and every repetition's rows
persisted (targets missed do not fail it), else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import queue
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(REPO / "python" / "tests"))
import benchlib  # noqa: E402
import pg_floor  # noqa: E402
import pg_server  # noqa: E402
import raw_sqlite  # noqa: E402
import run as sqlite_harness  # noqa: E402  (bench/run.py: run_engine, tables, git)

log = benchlib.log

PIECES = (
    "pgbench",
    "floor",
    "cloacina",
    "engines",
    "queue",
    "latency",
    "takeover",
    "dbos",
    "sqlite",
)
SIZES = {  # default, --quick
    "chain": (100, 20),
    "runs": (200, 20),
    "concurrent": (100, 20),
    "pair_runs": (200, 40),
    "reps": (3, 3),
    "cloacina_reps": (5, 3),
    "samples": (200, 30),
    "trials": (5, 3),
    "pgbench_seconds": (5.0, 2.0),
    "timeout": (1800.0, 300.0),
}
DBOS_DATABASE = "cloacina_bench_dbos"
PGBENCH_SCHEMA = "cloacina_bench_pgbench"
# The engine trusts only leases, not liveness locks, for this long after the server
# (re)started (rust/store/postgres/read.rs: orphan_candidates); takeover waits it out.
RESTART_GRACE_S = 10.0

TARGETS = {
    "W1_vs_dbos": ">= 10x faster than DBOS",
    "W3_vs_dbos": ">= 10x faster than DBOS",
    "W4_vs_dbos": ">= 10x faster than DBOS",
    "W1_commits_per_task": "<= 2 pgbench commits per task",
    "W4_tasks_per_s": ">= 5000 tasks/s, one engine",
    "two_engines_ratio": ">= 0.8x of one engine",
    "latency_p50_ms": "< 5 ms p50",
    "takeover_p50_s": "< 2 s",
}

TARGET_PIECES = {  # what a target needs
    "W1_vs_dbos": {"cloacina", "dbos"},
    "W3_vs_dbos": {"cloacina", "dbos"},
    "W4_vs_dbos": {"cloacina", "dbos"},
    "W1_commits_per_task": {"cloacina", "pgbench"},
    "W4_tasks_per_s": {"cloacina"},
    "two_engines_ratio": {"engines"},
    "latency_p50_ms": {"latency"},
    "takeover_p50_s": {"takeover"},
}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    ap.add_argument("--chain", type=int, help="W1: tasks in the chain (100)")
    ap.add_argument("--runs", type=int, help="W3: sequential runs of a 3-task chain (200)")
    ap.add_argument("--concurrent", type=int, help="W4: concurrent runs of a 5-task chain (100)")
    ap.add_argument(
        "--pair-runs",
        type=int,
        help="engines and queue tests: W4 runs per repetition, split between the engines (200)",
    )
    ap.add_argument("--reps", type=int, help="DBOS repetitions per workload, >= 3 (3)")
    ap.add_argument("--cloacina-reps", type=int, help="cloacina repetitions, >= 3 (5)")
    ap.add_argument("--samples", type=int, help="submit -> start latency samples (200)")
    ap.add_argument("--trials", type=int, help="takeover trials (5)")
    ap.add_argument(
        "--hold-runs",
        type=int,
        default=3,
        help="takeover: runs the killed process drives, 1 to 8 (3)",
    )
    ap.add_argument("--pgbench-seconds", type=float, help="each pgbench measurement (5)")
    ap.add_argument("--timeout", type=float, help="seconds before a subprocess is killed (1800)")
    ap.add_argument(
        "--only", default=",".join(PIECES), help=f"comma-separated subset of {','.join(PIECES)}"
    )
    ap.add_argument(
        "--pg-url",
        default=None,
        help="an existing server (a database URL) instead of a throwaway one; the schemas "
        "made are dropped afterwards, DBOS's database too",
    )
    ap.add_argument("--max-concurrency", type=int, default=None, help="cloacina Runner()")
    ap.add_argument("--workdir", default=str(BENCH / ".work"))
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--keep-work", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    for key, (default, quick) in SIZES.items():
        if getattr(a, key) is None:
            setattr(a, key, quick if a.quick else default)
    if a.reps < 3 or a.cloacina_reps < 3:
        ap.error("--reps and --cloacina-reps must be at least 3 (numbers are medians)")
    if not 1 <= a.hold_runs <= 8:
        ap.error("--hold-runs must be 1 to 8 (the driver's task slots: 8)")
    if a.pair_runs < 2:
        ap.error("--pair-runs must be at least 2 (split between two engines)")
    a.pieces = [p.strip() for p in a.only.split(",") if p.strip()]
    for p in a.pieces:
        if p not in PIECES:
            ap.error(f"--only: unknown {p!r}; choose from {', '.join(PIECES)}")
    return a


# ---------------------------------------------------------------------------------------
# Child processes: every one is registered, and stopped on the way out


class ChildFailed(RuntimeError):
    pass


class Child:
    """A bench/pg_workloads.py process: lines 'MSG <json>' from its stdout, commands to
    its stdin; its stderr goes to ours."""

    live: ClassVar[set[Child]] = set()

    def __init__(self, name: str, args: list[str]):
        self.name = name
        cmd = [sys.executable, str(BENCH / "pg_workloads.py"), *args]
        env = {**os.environ, "CLOACINA_BENCH_PARENT": str(os.getpid())}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env
        )
        self.pid = self.proc.pid
        Child.live.add(self)
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True, name=f"read-{name}")
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("MSG "):
                try:
                    self.messages.put(json.loads(line[4:]))
                except ValueError:
                    log(f"   {self.name}: unreadable message {line.strip()!r}")
            elif line.strip():
                log(f"   {self.name}: {line.rstrip()}")
        self.messages.put(None)  # end of output

    def recv(self, timeout: float) -> dict[str, Any]:
        """The next message; ChildFailed if the process ends first or `timeout` passes."""
        try:
            got = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(f"{self.name}: no answer within {timeout:g} s") from None
        if got is None:
            self.messages.put(None)
            code = self.proc.wait(timeout=30)
            raise ChildFailed(f"{self.name}: ended (exit code {code}) without answering")
        return got

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=30)
        Child.live.discard(self)

    def stop(self, grace: float = 20.0, exiting: float = 0.0) -> int | None:
        """Closes stdin; waits up to `exiting` seconds for the process to end by itself (one
        that was told to quit, or has answered); then SIGTERM (a serving worker drains),
        then SIGKILL `grace` seconds later. Returns the exit code."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        if exiting and self.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=exiting)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"   {self.name}: still running {grace:g} s after SIGTERM: killed")
                self.kill()
        Child.live.discard(self)
        return self.proc.returncode

    @classmethod
    def stop_all(cls) -> None:
        for child in list(cls.live):
            try:
                child.stop(grace=10.0)
            except Exception as e:  # never let cleanup stop cleanup
                log(f"   stopping {child.name}: {benchlib.describe_exception(e)}")


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: children and server stopped


# ---------------------------------------------------------------------------------------
# The server


def pg_connect(url: str):
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=10)


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def filesystem_of(path: str) -> dict[str, str] | None:
    """The mount (device, type, mount point) holding `path`, from /proc/mounts."""
    try:
        path = os.path.realpath(path)
        best = None
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                mnt = mnt.replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and (
                    best is None or len(mnt) > len(best[1])
                ):
                    best = (dev, mnt, fstype)
        return dict(zip(("device", "mount", "type"), best, strict=True)) if best else None
    except OSError:
        return None


def server_info(url: str, datadir: str | None) -> dict[str, Any]:
    names = (
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "wal_level",
        "shared_buffers",
        "max_connections",
        "commit_delay",
    )
    with pg_connect(url) as con:
        info: dict[str, Any] = {n: con.execute(f"SHOW {n}").fetchone()[0] for n in names}
        info["data_directory"] = datadir
        if datadir is None:
            try:  # superusers (and pg_read_all_settings) only
                info["data_directory"] = con.execute("SHOW data_directory").fetchone()[0]
            except Exception:
                pass
    info["filesystem"] = filesystem_of(info["data_directory"]) if datadir else None
    warnings = []
    if info["fsync"] != "on" or info["synchronous_commit"] != "on":
        warnings.append(
            f"the server runs with fsync={info['fsync']}, synchronous_commit="
            f"{info['synchronous_commit']}: commits are not durable, the numbers not comparable"
        )
    if (info["filesystem"] or {}).get("type") in ("tmpfs", "ramfs"):
        warnings.append("the data directory is in memory (tmpfs): fsync costs nothing there")
    info["warnings"] = warnings
    return info


def server_uptime(url: str) -> float:
    with pg_connect(url) as con:
        return float(
            con.execute(
                "SELECT extract(epoch FROM clock_timestamp() - pg_postmaster_start_time())"
            ).fetchone()[0]
        )


def drop_schemas(url: str, schemas: list[str]) -> None:
    with pg_connect(url) as con:
        con.execute("SET lock_timeout = '10s'")
        for s in schemas:
            con.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')


# ---------------------------------------------------------------------------------------
# pgbench: the server's one-row commit


def find_pgbench(bindir: Path | None) -> str | None:
    if bindir is not None and (bindir / "pgbench").exists():
        return str(bindir / "pgbench")  # the server's own version
    return shutil.which("pgbench")


def pgbench_setup(url: str) -> None:
    with pg_connect(url) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {PGBENCH_SCHEMA}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {PGBENCH_SCHEMA}.commits "
            "(id bigserial PRIMARY KEY, client int NOT NULL, note text NOT NULL)"
        )


def pgbench(exe: str, url: str, seconds: float, work: Path, label: str) -> dict[str, Any]:
    """One client committing one INSERT of a task-result-sized row per transaction, for
    `seconds`; checks that the table gained as many rows as pgbench counted."""
    script = work / "pgbench-commit.sql"
    payload = raw_sqlite.PAYLOAD.replace("'", "''")
    script.write_text(
        f"INSERT INTO {PGBENCH_SCHEMA}.commits (client, note) VALUES (:client_id, '{payload}');\n"
    )
    out: dict[str, Any] = {"label": label, "seconds": seconds, "valid": False}
    try:
        pgbench_setup(url)
        with pg_connect(url) as con:
            before = con.execute(f"SELECT count(*) FROM {PGBENCH_SCHEMA}.commits").fetchone()[0]
        out.update(pg_floor.pgbench_latency(exe, url, script, seconds))
        if "error" in out:
            return out
        with pg_connect(url) as con:
            after = con.execute(f"SELECT count(*) FROM {PGBENCH_SCHEMA}.commits").fetchone()[0]
        out["rows_added"] = after - before
        out["ms_per_commit"] = 1000.0 / out["tps"]
        out["valid"] = out["rows_added"] == out["transactions"] > 0
        if not out["valid"]:
            out["error"] = f"{out['rows_added']} rows for {out['transactions']} commits"
    except Exception as e:  # psycopg errors
        out["error"] = benchlib.describe_exception(e)
    ms = out.get("ms_per_commit")
    log(
        f"   pgbench ({label}): "
        + (f"{ms:.3f} ms/commit ({out['tps']:.0f}/s)" if ms else f"FAILED: {out.get('error')}")
    )
    return out


# ---------------------------------------------------------------------------------------
# The pieces


def child_args(a: argparse.Namespace, url: str, schema: str, *extra: str) -> list[str]:
    args = ["--url", url, "--schema", schema, *extra]
    if a.max_concurrency is not None:
        args.append(f"--max-concurrency={a.max_concurrency}")
    return args


def start_workers(a, url: str, schema: str, n: int, label: str) -> list[Child]:
    workers = [
        Child(f"{label}-worker{i + 1}", ["serve", *child_args(a, url, schema)]) for i in range(n)
    ]
    for w in workers:
        w.recv(timeout=120)  # ready
    return workers


def stop_workers(workers: list[Child], problems: list[str], label: str) -> None:
    for w in workers:
        code = w.stop()
        if code not in (0, None):
            problems.append(f"{label}: {w.name} exited with code {code} after SIGTERM")


def measure_engines(a, url: str, schema_prefix: str) -> dict[str, Any]:
    """W4's shape, --pair-runs runs per rep, on one engine, then split over two engines
    (two processes, each its own Runner on one shared schema), started together by a line
    on their stdin. A rep's throughput: its tasks / (last end - first start)."""
    out: dict[str, Any] = {"runs": a.pair_runs, "tasks": 5 * a.pair_runs}
    for n_engines in (1, 2):
        key = f"engines_{n_engines}"
        schema = f"{schema_prefix}_eng{n_engines}"
        log(f"== W4 on {n_engines} engine(s): {a.pair_runs} runs per rep (schema {schema})")
        engines: list[Child] = []
        reps: list[dict[str, Any]] = []
        error = None
        try:
            engines = [
                Child(f"engine{i + 1}/{n_engines}", ["engine", *child_args(a, url, schema)])
                for i in range(n_engines)
            ]
            for eng in engines:
                eng.recv(timeout=120)
            shares = [
                a.pair_runs // n_engines + (i < a.pair_runs % n_engines) for i in range(n_engines)
            ]
            for rep in range(a.cloacina_reps):
                for eng, share in zip(engines, shares, strict=True):
                    eng.send(f"GO {share}")
                answers = [eng.recv(timeout=a.timeout) for eng in engines]
                span = max(x["t1"] for x in answers) - min(x["t0"] for x in answers)
                problems = [p for x in answers for p in x["problems"]]
                rows = {
                    "per_engine_s": [round(x["seconds"], 4) for x in answers],
                    "start_skew_ms": round(
                        1000 * (max(x["t0"] for x in answers) - min(x["t0"] for x in answers)), 2
                    ),
                    "runs_completed": sum(x["rows"].get("runs_completed", 0) for x in answers),
                }
                rec = benchlib.rep_record(span, problems, rows)
                reps.append(rec)
                log(benchlib.rep_line(f"W4 x{n_engines} engines", rep, rec))
            for eng in engines:
                eng.send("QUIT")
        except (ChildFailed, OSError) as exc:
            error = str(exc)
            log(f"   FAILED: {error}")
        finally:
            for eng in engines:
                code = eng.stop(exiting=30)
                if code not in (0, None) and error is None:
                    error = f"{eng.name} exited with code {code}"
        out[key] = benchlib.summarize(
            5 * a.pair_runs, a.pair_runs, reps, a.cloacina_reps, error, schema=schema
        )
    one, two = out["engines_1"], out["engines_2"]
    out["ratio"] = (
        two["tasks_per_s"] / one["tasks_per_s"]
        if one["valid"] and two["valid"] and one["tasks_per_s"] and two["tasks_per_s"]
        else None
    )
    return out


def measure_queue(a, url: str, schema_prefix: str) -> dict[str, Any]:
    """W4's shape through the queue: a submit-only client starts --pair-runs runs and
    waits for them; serving workers (1, then 2) claim and drive them."""
    out: dict[str, Any] = {"runs": a.pair_runs, "tasks": 5 * a.pair_runs}
    for n_workers in (1, 2):
        key = f"workers_{n_workers}"
        schema = f"{schema_prefix}_q{n_workers}"
        log(f"== W4 queued: {n_workers} serving worker(s), {a.pair_runs} runs (schema {schema})")
        workers: list[Child] = []
        problems: list[str] = []
        try:
            workers = start_workers(a, url, schema, n_workers, f"queue{n_workers}")
            client = Child(
                f"queue-client/{n_workers}",
                [
                    "queue",
                    *child_args(a, url, schema),
                    f"--runs={a.pair_runs}",
                    f"--reps={a.cloacina_reps}",
                    f"--workers={n_workers}",
                ],
            )
            try:
                result = client.recv(timeout=a.timeout)["result"]
            finally:
                client.stop(exiting=30)
        except (ChildFailed, OSError) as e:
            result = benchlib.summarize(5 * a.pair_runs, a.pair_runs, [], a.cloacina_reps, str(e))
            log(f"   FAILED: {e}")
        finally:
            stop_workers(workers, problems, f"queue x{n_workers}")
        if problems:
            result["valid"] = False
            result["error"] = result.get("error") or "; ".join(problems)
        result["schema"] = schema
        out[key] = result
    one, two = out["workers_1"], out["workers_2"]
    out["ratio"] = (
        two["tasks_per_s"] / one["tasks_per_s"]
        if one["valid"] and two["valid"] and one["tasks_per_s"] and two["tasks_per_s"]
        else None
    )
    return out


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-q * len(s) // 100)) - 1))
    return s[k]


def measure_latency(a, url: str, schema: str) -> dict[str, Any]:
    """A serving worker; a submit-only client submitting runs one at a time."""
    log(f"== submit -> first task start: {a.samples} runs, one at a time (schema {schema})")
    out: dict[str, Any] = {"samples_wanted": a.samples, "schema": schema, "valid": False}
    workers: list[Child] = []
    problems: list[str] = []
    try:
        workers = start_workers(a, url, schema, 1, "latency")
        client = Child(
            "latency-client", ["latency", *child_args(a, url, schema), f"--samples={a.samples}"]
        )
        try:
            got = client.recv(timeout=a.timeout)
        finally:
            client.stop(exiting=30)
        samples = got["samples"]
        lat = [s["latency_ms"] for s in samples]
        sub = [s["submit_ms"] for s in samples]
        out.update(
            {
                "samples": samples,
                "p50_ms": percentile(lat, 50),
                "p90_ms": percentile(lat, 90),
                "p99_ms": percentile(lat, 99),
                "max_ms": max(lat) if lat else None,
                "submit_p50_ms": percentile(sub, 50),
                "stages_p50_ms": {
                    k: percentile([x[k] for x in samples if k in x], 50)
                    for k in (
                        "to_created_ms",
                        "created_to_claimed_ms",
                        "claimed_to_task_ms",
                        "task_to_body_ms",
                    )
                },
                "owners": got.get("owners"),
                "error": got.get("error"),
            }
        )
        problems += got.get("problems", [])
        if got.get("error"):
            problems.append(got["error"])
        if len(samples) != a.samples:
            problems.append(f"{len(samples)} samples of {a.samples}")
    except (ChildFailed, OSError) as e:
        problems.append(str(e))
    finally:
        stop_workers(workers, problems, "latency")
    out["problems"] = problems
    out["valid"] = not problems
    if out.get("p50_ms") is not None:
        log(
            f"   submit -> start: p50 {out['p50_ms']:.2f} ms, p99 {out['p99_ms']:.2f} ms, "
            f"max {out['max_ms']:.2f} ms (start() itself: p50 {out['submit_p50_ms']:.2f} ms)"
        )
        st = out["stages_p50_ms"]
        if None not in st.values():
            log(
                "   stages, p50 each: submit -> run row's created_at {to_created_ms:.2f}, "
                "-> claimed (runs.started_at) {created_to_claimed_ms:.2f}, -> task's "
                "started_at {claimed_to_task_ms:.2f}, -> task body {task_to_body_ms:.2f} ms".format(
                    **st
                )
            )
    return out


def run_status(url: str, schema: str, run_id: str) -> tuple[str | None, str | None]:
    with pg_connect(url) as con:
        row = con.execute(
            f'SELECT status, owner FROM "{schema}".runs WHERE run_id = %s', (run_id,)
        ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def wait_for_end(url: str, schema: str, run_id: str, timeout: float) -> str | None:
    """The run's status once final (or as it is when `timeout` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _owner = run_status(url, schema, run_id)
        if status in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            return status
        time.sleep(0.02)


def wait_for(predicate, timeout: float, interval: float = 0.002):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def measure_takeover(a, url: str, schema: str, work: Path) -> dict[str, Any]:
    """A serving worker stays up; per trial a driver process starts --hold-runs runs whose
    first task sleeps while in the driver; the driver is SIGKILLed at a random moment
    0.2-0.7 s after those tasks started. A run's takeover time: from the kill to its task's
    start in another process (the lost attempt tried again); a trial's: its slowest run's."""
    n = a.hold_runs
    log(f"== takeover after SIGKILL: {a.trials} trials of {n} run(s) (schema {schema})")
    marks = work / "takeover-marks"
    marks.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {
        "trials_wanted": a.trials,
        "runs_per_trial": n,
        "schema": schema,
        "trials": [],
    }
    problems: list[str] = []
    workers: list[Child] = []
    try:
        uptime = server_uptime(url)
        if uptime < RESTART_GRACE_S + 2:
            wait = RESTART_GRACE_S + 2 - uptime
            log(f"   the server started {uptime:.1f} s ago: waiting {wait:.1f} s (restart grace)")
            time.sleep(wait)
        workers = start_workers(a, url, schema, 1, "takeover")
        worker_pid = workers[0].pid
        for trial in range(a.trials):
            driver = Child(
                f"driver{trial}",
                [
                    "driver",
                    "--url",
                    url,
                    "--schema",
                    schema,
                    f"--trial={trial}",
                    f"--mark-dir={marks}",
                    f"--hold-runs={n}",
                ],
            )
            killed = driver.pid
            try:
                run_ids = driver.recv(timeout=120)["run_ids"]
                mine = [marks / f"{trial}-{slot}-{killed}.json" for slot in range(n)]
                if not wait_for(lambda mine=mine: all(p.exists() for p in mine), 60):
                    raise ChildFailed(f"trial {trial}: the runs' first tasks never all started")
                time.sleep(random.uniform(0.2, 0.7))
                t_kill = time.time()
                driver.kill()
            finally:
                if driver.alive():
                    driver.kill()

            def taken(trial: int = trial, killed: int = killed) -> list[Path] | None:
                found = {}
                for p in marks.glob(f"{trial}-*-*.json"):
                    _, slot, pid = p.stem.split("-")
                    if int(pid) != killed:
                        found[int(slot)] = p
                return [found[s] for s in range(n)] if len(found) == n else None

            found = wait_for(taken, min(a.timeout, 120), interval=0.001)
            rec: dict[str, Any] = {"trial": trial, "run_ids": run_ids}
            if found is None:
                rec["error"] = "not every run's task started in another process within 120 s"
                problems.append(f"trial {trial}: {rec['error']}")
            else:
                got = [json.loads(p.read_text()) for p in found]
                rec["per_run_s"] = [m["t"] - t_kill for m in got]
                rec["takeover_s"] = max(rec["per_run_s"])
                rec["by_worker"] = all(m["pid"] == worker_pid for m in got)
                rec["status"] = [wait_for_end(url, schema, r, 60) for r in run_ids]
                bad = [st for st in rec["status"] if st != "completed"]
                if bad:
                    problems.append(f"trial {trial}: runs ended {rec['status']}")
                log(
                    f"   trial {trial}: {n} run(s) taken over "
                    f"{', '.join(f'{1000 * x:.0f}' for x in rec['per_run_s'])} ms after the kill "
                    f"(by the worker: {rec['by_worker']}), runs {', '.join(set(rec['status']))}"
                )
            out["trials"].append(rec)
    except (ChildFailed, OSError) as e:
        problems.append(str(e))
    except Exception as e:  # psycopg
        problems.append(benchlib.describe_exception(e))
    finally:
        stop_workers(workers, problems, "takeover")
    times = [t["takeover_s"] for t in out["trials"] if "takeover_s" in t]
    out["p50_s"] = statistics.median(times) if times else None
    out["max_s"] = max(times) if times else None
    out["min_s"] = min(times) if times else None
    out["problems"] = problems
    out["valid"] = not problems and len(times) == a.trials
    return out


def run_dbos(a, url: str, work: Path) -> dict[str, Any]:
    out = work / "dbos-pg.json"
    cmd = [
        sys.executable,
        str(BENCH / "peers" / "dbos_workloads.py"),
        f"--system-db-url={with_database(url, DBOS_DATABASE)}",
        "--workloads=W1,W3,W4",
        f"--out={out}",
        f"--chain={a.chain}",
        f"--runs={a.runs}",
        f"--concurrent={a.concurrent}",
        f"--reps={a.reps}",
    ]
    return sqlite_harness.run_engine("dbos[postgres]", cmd, out, a.timeout)


def run_cloacina(a, url: str, schema_prefix: str, work: Path) -> dict[str, Any]:
    out = work / "cloacina-pg.json"
    cmd = [
        sys.executable,
        str(BENCH / "pg_workloads.py"),
        "workloads",
        *child_args(a, url, schema_prefix),
        f"--out={out}",
        f"--chain={a.chain}",
        f"--runs={a.runs}",
        f"--concurrent={a.concurrent}",
        f"--reps={a.cloacina_reps}",
    ]
    return sqlite_harness.run_engine("cloacina[postgres]", cmd, out, a.timeout)


def run_sqlite(a, work: Path) -> dict[str, Any]:
    """cloacina's W1/W3/W4 on SQLite in both durability modes, for the table's last columns."""
    results = {}
    for mode in ("normal", "full"):
        out = work / f"cloacina-sqlite-{mode}.json"
        cmd = [
            sys.executable,
            str(BENCH / "cloacina_workloads.py"),
            f"--mode={mode}",
            f"--dbdir={work / 'sqlite'}",
            f"--out={out}",
            "--workloads=W1,W3,W4",
            "--old-runs=0",
            f"--chain={a.chain}",
            f"--runs={a.runs}",
            f"--concurrent={a.concurrent}",
            f"--reps={a.cloacina_reps}",
        ]
        if a.max_concurrency is not None:
            cmd.append(f"--max-concurrency={a.max_concurrency}")
        results[mode] = sqlite_harness.run_engine(f"cloacina[sqlite {mode}]", cmd, out, a.timeout)
    return results


def native_build() -> dict[str, Any]:
    """Whether cloacina's native module carries DWARF debug sections: a debug (unoptimised)
    build does, a release build (the Cargo default strips them) does not."""
    info: dict[str, Any] = {"path": None, "bytes": None, "mtime": None, "debug_sections": None}
    spec = importlib.util.find_spec("cloacina")
    if spec is None or not spec.submodule_search_locations:
        return info
    for d in spec.submodule_search_locations:
        for so in Path(d).glob("_native*.so"):
            st = so.stat()
            info["path"], info["bytes"], info["mtime"] = str(so), st.st_size, st.st_mtime
            info["debug_sections"] = _has_debug_info(so)
            return info
    return info


def _has_debug_info(path: Path) -> bool | None:
    """Reads the ELF64 section names; True if one is .debug_info."""
    import struct

    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF" or head[4] != 2:
                return None
            shoff = struct.unpack_from("<Q", head, 0x28)[0]
            shentsize, _shnum, shstrndx = struct.unpack_from("<HHH", head, 0x3A)
            f.seek(shoff + shstrndx * shentsize)
            sh = f.read(shentsize)
            str_off, str_size = struct.unpack_from("<QQ", sh, 0x18)
            f.seek(str_off)
            names = f.read(str_size)
        return b".debug_info\x00" in names
    except (OSError, struct.error, IndexError):
        return None


# ---------------------------------------------------------------------------------------
# Tables


def good(w: dict[str, Any] | None) -> bool:
    return bool(w) and bool(w.get("valid")) and w.get("per_task_ms") is not None


def wl(side: dict[str, Any] | None, key: str) -> dict[str, Any] | None:
    return ((side or {}).get("workloads") or {}).get(key)


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def build(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any], list[list[str]]]:
    c, d = results.get("cloacina"), results.get("dbos")
    sq = results.get("sqlite") or {}
    pgb = (results.get("pgbench") or {}).get("ms_per_commit")
    cell = sqlite_harness.cell
    rows: list[list[str]] = []
    summary: dict[str, Any] = {"pgbench_ms_per_commit": pgb}
    shown = any((c, d, sq.get("normal"), sq.get("full")))  # rows of pieces that ran
    for key in ("W1", "W3", "W4"):
        cw, dw = wl(c, key), wl(d, key)
        sides = (cw, dw, wl(sq.get("normal"), key), wl(sq.get("full"), key))
        label = next((w["label"] for w in sides if w and w.get("label")), "")
        cv = cw["per_task_ms"] if good(cw) else None
        dv = dw["per_task_ms"] if good(dw) else None
        speed = dv / cv if cv and dv else None
        summary[key] = {
            "label": label,
            "cloacina_ms_per_task": cv,
            "dbos_ms_per_task": dv,
            "speedup_vs_dbos": speed,
            "sqlite_normal_ms_per_task": (wl(sq.get("normal"), key) or {}).get("per_task_ms"),
            "sqlite_full_ms_per_task": (wl(sq.get("full"), key) or {}).get("per_task_ms"),
        }
        if not shown:
            continue
        rows.append(
            [
                f"{key} {label}, ms/task",
                cell(cw),
                cell(dw),
                fmt(speed, ".1f") + "x" if speed else "n/a",
                cell(wl(sq.get("normal"), key)),
                cell(wl(sq.get("full"), key)),
            ]
        )
    cw4, dw4 = wl(c, "W4"), wl(d, "W4")
    summary["W4_tasks_per_s"] = cw4["tasks_per_s"] if good(cw4) else None
    # W4's start loop: a start() returns once its run is committed, while earlier runs run
    starts = [r["rows"].get("start_ms_each") for r in (cw4 or {}).get("reps", [])]
    starts = [x for x in starts if x is not None]
    summary["W4_start_ms_each"] = statistics.median(starts) if good(cw4) and starts else None
    # W1 per task in pgbench commits
    per = {}
    for name, w in (("cloacina", wl(c, "W1")), ("dbos", wl(d, "W1"))):
        per[name] = w["per_task_ms"] / pgb if good(w) and pgb else None
    summary["W1_commits_per_task"] = per
    # transaction ids per task: about the commits asked for (NOTIFYs take one too)
    xacts: dict[str, dict[str, float | None]] = {}
    for name, side in (("cloacina", c), ("dbos", d)):
        xacts[name] = {}
        for key in ("W1", "W3", "W4"):
            w = wl(side, key)
            counts = [r["rows"].get("xids") for r in (w or {}).get("reps", [])]
            counts = [x for x in counts if x is not None]
            xacts[name][key] = (
                statistics.median(counts) / w["tasks"] if good(w) and counts else None
            )
    summary["xids_per_task"] = xacts
    if shown:
        rows.append(
            [
                "W4 tasks/s (one engine)",
                cell(cw4, "tasks_per_s", "{:.0f}"),
                cell(dw4, "tasks_per_s", "{:.0f}"),
                "",
                cell(wl(sq.get("normal"), "W4"), "tasks_per_s", "{:.0f}"),
                cell(wl(sq.get("full"), "W4"), "tasks_per_s", "{:.0f}"),
            ]
        )
    if c:
        st = summary["W4_start_ms_each"]
        rows.append(
            [
                "W4 start() with earlier runs in flight, ms each",
                fmt(st, ".3f") + (f" ({st / pgb:.1f} commits)" if st and pgb else ""),
                "",
                "",
                "",
                "",
            ]
        )
    if c or d:
        rows.append(
            [
                "W1 per task / pgbench commit",
                fmt(per["cloacina"], ".2f"),
                fmt(per["dbos"], ".2f"),
                "",
                "",
                "",
            ]
        )
    # The SQL floor: what the workload's commits cost with no engine around them.
    summary["floor"] = {}
    for key, f in (results.get("floor") or {}).items():
        fv = f["ms_per_task"]
        cv, dv = summary[key]["cloacina_ms_per_task"], summary[key]["dbos_ms_per_task"]
        summary["floor"][key] = {
            "ms_per_task": fv,
            "dbos_vs_floor": dv / fv if dv else None,
            "cloacina_above_floor_ms": cv - fv if cv else None,
        }
        rows.append(
            [
                f"{key} SQL floor: its statements from pgbench, ms/task",
                fmt(fv, ".3f") + (f" (cloacina {cv - fv:+.3f})" if cv else ""),
                "",
                f"{dv / fv:.1f}x at most" if dv else "",
                "",
                "",
            ]
        )
    if c or d:
        rows.append(
            [
                "transaction ids per task, W1 / W3 / W4",
                *(" / ".join(fmt(xacts[n][k], ".2f") for k in ("W1", "W3", "W4")) for n in xacts),
                "",
                "",
                "",
            ]
        )
    # Scaling from one process to two: engines driving runs, workers serving the queue.
    for name, one_key, two_key, label in (
        ("engines", "engines_1", "engines_2", "runs: 1 engine -> 2 engines"),
        ("queue", "workers_1", "workers_2", "queued: 1 worker -> 2 workers"),
    ):
        scaling = results.get(name)
        if not scaling:
            continue
        one, two = scaling[one_key], scaling[two_key]
        summary[name] = {
            "one_tasks_per_s": one["tasks_per_s"] if one["valid"] else None,
            "two_tasks_per_s": two["tasks_per_s"] if two["valid"] else None,
            "ratio": scaling["ratio"],
        }
        rows.append(
            [
                f"W4 x{scaling['runs']} {label}, tasks/s",
                f"{cell(one, 'tasks_per_s', '{:.0f}')} -> {cell(two, 'tasks_per_s', '{:.0f}')}"
                f" ({fmt(scaling['ratio'], '.2f')}x)",
                "",
                "",
                "",
                "",
            ]
        )
    lat = results.get("latency")
    if lat:
        ok = lat.get("valid")
        summary["latency"] = {k: lat.get(k) if ok else None for k in ("p50_ms", "p99_ms", "max_ms")}
        text = (
            f"{lat['p50_ms']:.2f} / {lat['p99_ms']:.2f}"
            if ok and lat.get("p50_ms") is not None
            else "INVALID"
        )
        if ok and pgb:
            text += f" ({lat['p50_ms'] / pgb:.1f} commits)"
        rows.append(["submit -> first task start, p50 / p99 ms", text, "", "", "", ""])
    to = results.get("takeover")
    if to:
        ok = to.get("valid")
        summary["takeover"] = {k: to.get(k) if ok else None for k in ("p50_s", "min_s", "max_s")}
        text = (
            f"{to['p50_s']:.3f} ({to['min_s']:.3f}-{to['max_s']:.3f})"
            if ok and to.get("p50_s") is not None
            else "INVALID"
        )
        rows.append(
            [
                f"takeover after SIGKILL, p50 (range) s, {len(to['trials'])} trials"
                f" x {to['runs_per_trial']} runs",
                text,
                "",
                "",
                "",
                "",
            ]
        )

    # targets
    trows: list[list[str]] = []
    met: dict[str, Any] = {}

    pieces = set(results["meta"]["pieces"])

    def target(key: str, value: float | None, shown: str, ok: bool | None) -> None:
        met[key] = {"target": TARGETS[key], "value": value, "met": ok}
        if value is not None or TARGET_PIECES[key] <= pieces:  # measured, or should have been
            trows.append(
                [key, TARGETS[key], shown, "n/a" if ok is None else ("yes" if ok else "NO")]
            )

    for key in ("W1", "W3", "W4"):
        s = summary[key]["speedup_vs_dbos"]
        target(
            f"{key}_vs_dbos", s, fmt(s, ".1f") + "x" if s else "n/a", None if s is None else s >= 10
        )
    x = per["cloacina"]
    target("W1_commits_per_task", x, fmt(x, ".2f"), None if x is None else x <= 2)
    t = summary["W4_tasks_per_s"]
    target("W4_tasks_per_s", t, fmt(t, ".0f"), None if t is None else t >= 5000)
    r = (summary.get("engines") or {}).get("ratio")
    target(
        "two_engines_ratio", r, fmt(r, ".2f") + "x" if r else "n/a", None if r is None else r >= 0.8
    )
    p = (summary.get("latency") or {}).get("p50_ms")
    target("latency_p50_ms", p, fmt(p, ".2f") + " ms" if p else "n/a", None if p is None else p < 5)
    k = (summary.get("takeover") or {}).get("p50_s")
    target("takeover_p50_s", k, fmt(k, ".3f") + " s" if k else "n/a", None if k is None else k < 2)
    summary["targets"] = met
    return rows, summary, trows


def problems_of(results: dict[str, Any]) -> list[str]:
    out: list[str] = list(results.get("problems", []))
    for name, side in (
        ("cloacina[postgres]", results.get("cloacina")),
        ("dbos[postgres]", results.get("dbos")),
        *((f"cloacina[sqlite {m}]", s) for m, s in (results.get("sqlite") or {}).items()),
    ):
        if side is None:
            continue
        proc = side.get("process", {})
        if proc.get("ended", "ok") != "ok":
            out.append(f"{name}: process {proc['ended']}")
        for key, w in (side.get("workloads") or {}).items():
            if w.get("error"):
                out.append(f"{name} {key}: {w['error']}")
            elif not w.get("valid"):
                bad = [p for r in w.get("reps", []) for p in r.get("problems", [])]
                out.append(f"{name} {key}: invalid: {bad[:3]}")
    for p in results.get("pgbench_samples") or []:
        if not p.get("valid"):
            out.append(f"pgbench ({p['label']}): {p.get('error')}")
    for f in results.get("floor_samples") or []:
        for key in ("W1", "W3"):
            if not f[key].get("valid"):
                out.append(f"floor {key} ({f['label']}): {f[key].get('error')}")
    for piece, subs in (
        ("engines", ("engines_1", "engines_2")),
        ("queue", ("workers_1", "workers_2")),
    ):
        r = results.get(piece)
        for sub in subs if r else ():
            w = r[sub]
            if w.get("error"):
                out.append(f"{piece} {sub}: {w['error']}")
            elif not w.get("valid"):
                bad = [p for rep in w.get("reps", []) for p in rep.get("problems", [])]
                out.append(f"{piece} {sub}: invalid: {bad[:3]}")
    for piece in ("latency", "takeover"):
        r = results.get(piece)
        if r and not r.get("valid"):
            out.append(f"{piece}: {r.get('problems')}")
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------


def spread(key: str, ms: list[float]) -> dict[str, Any] | None:
    """The median of samples `ms` (as `key`), with their range and count; None for none."""
    if not ms:
        return None
    return {key: statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "samples": len(ms)}


def main() -> int:
    a = parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = Path(a.workdir).resolve() / f"pg-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)  # the server's user (as root: `postgres`) must reach its data
    prefix = "cb" + secrets.token_hex(3)  # schemas: unique on a shared server too
    build_info = native_build()
    results: dict[str, Any] = {
        "meta": {
            "timestamp_utc": stamp,
            "git_commit": sqlite_harness.git_commit(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "argv": sys.argv[1:],
            "pieces": a.pieces,
            "quick": a.quick,
            "sizes": {
                k: getattr(a, k)
                for k in ("chain", "runs", "concurrent", "pair_runs", "reps", "cloacina_reps")
            },
            "samples": a.samples,
            "trials": a.trials,
            "hold_runs": a.hold_runs,
            "pgbench_seconds": a.pgbench_seconds,
            "max_concurrency": a.max_concurrency,
            "schema_prefix": prefix,
            "native_module": build_info,
            "loadavg_start": os.getloadavg(),
            "workdir": str(work),
        },
        "server": None,
        "pgbench_samples": [],
        "pgbench": None,
        "floor_samples": [],
        "floor": None,
        "cloacina": None,
        "engines": None,
        "queue": None,
        "latency": None,
        "takeover": None,
        "dbos": None,
        "sqlite": None,
        "problems": [],
    }
    problems = results["problems"]
    missing = [m for m in ("psycopg", "cloacina") if importlib.util.find_spec(m) is None]
    if missing:
        log(
            f"!! {' and '.join(missing)} not importable from {sys.executable}: install them "
            "first (nox -s bench_pg does)"
        )
        return 1
    log(f"PostgreSQL benchmark {stamp}: {', '.join(a.pieces)}; work dir {work}")
    debug = build_info.get("debug_sections")
    if debug:
        log("!! cloacina's native module has debug sections: a DEBUG build, numbers not meaningful")
    busy = sqlite_harness.busy_warning(results["meta"]["loadavg_start"])
    if busy:
        log("!! " + busy)

    server = None
    url = a.pg_url
    interrupted = False
    try:
        if url is None:
            server = pg_server.PgServer(settings=pg_server.DURABLE_SETTINGS, base_dir=work)
            log("== starting a PostgreSQL server (fsync=on, synchronous_commit=on)")
            url = server.start()
            log(f"   {url}, data in {server.datadir}, started in {server.startup_seconds:.1f} s")
        info = server_info(url, str(server.datadir) if server else None)
        info["own_server"] = server is not None
        results["server"] = info
        for w in info["warnings"]:
            log("!! " + w)
        exe = find_pgbench(server.bindir if server else pg_server.find_bindir())

        floor_schema = f"{prefix}_floor"
        if "floor" in a.pieces and exe is not None:
            pg_floor.prepare(url, floor_schema)

        def bench_commit(label: str) -> None:
            """pgbench's one-row commit, and the SQL floor, at `label` of the run."""
            if not {"pgbench", "floor"} & set(a.pieces):
                return
            if exe is None:
                problems.append("pgbench not found (PATH, /usr/lib/postgresql/*/bin)")
                return
            if "pgbench" in a.pieces:
                results["pgbench_samples"].append(pgbench(exe, url, a.pgbench_seconds, work, label))
            if "floor" in a.pieces:
                floor = pg_floor.measure(exe, url, floor_schema, a.pgbench_seconds, work)
                results["floor_samples"].append({"label": label, **floor})
                log(
                    f"   floor ({label}): "
                    + ", ".join(
                        f"{k} {v['ms_per_task']:.3f} ms/task"
                        if v.get("valid")
                        else f"{k} FAILED: {v.get('error')}"
                        for k, v in floor.items()
                    )
                )

        if "pgbench" in a.pieces:
            log(f"== pgbench: one client, one-row INSERT per commit, {a.pgbench_seconds:g} s")
        if "floor" in a.pieces:
            log(f"== floor: W1's and W3's statements from pgbench, {a.pgbench_seconds:g} s each")
        bench_commit("start")
        if "cloacina" in a.pieces:
            results["cloacina"] = run_cloacina(a, url, prefix, work)
        if "engines" in a.pieces:
            results["engines"] = measure_engines(a, url, prefix)
        if "queue" in a.pieces:
            results["queue"] = measure_queue(a, url, prefix)
        bench_commit("middle")
        if "latency" in a.pieces:
            results["latency"] = measure_latency(a, url, f"{prefix}_lat")
        if "takeover" in a.pieces:
            results["takeover"] = measure_takeover(a, url, f"{prefix}_to", work)
        if "dbos" in a.pieces:
            if importlib.util.find_spec("dbos") is None:
                problems.append(f"dbos is not importable from {sys.executable}")
            else:
                results["dbos"] = run_dbos(a, url, work)
        bench_commit("end")
        if "sqlite" in a.pieces:
            results["sqlite"] = run_sqlite(a, work)
    except Exception as e:  # the server, psycopg, ...: report, clean up, write the JSON
        problems.append(f"aborted: {benchlib.describe_exception(e)}")
        log("!! " + problems[-1])
    except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: clean up, write nothing
        interrupted = True
        log("!! interrupted: stopping the child processes and the server")
        raise
    finally:
        Child.stop_all()
        if url is not None and server is None:  # a server we were given: leave it clean
            try:
                with pg_connect(url) as con:
                    rows = con.execute(
                        "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                        (prefix + "%",),
                    ).fetchall()
                drop_schemas(url, [r[0] for r in rows] + [PGBENCH_SCHEMA])
                with pg_connect(url) as con:
                    con.execute(f"DROP DATABASE IF EXISTS {DBOS_DATABASE} WITH (FORCE)")
            except Exception as e:
                log(f"!! cleaning up the server: {benchlib.describe_exception(e)}")
        if server is not None:
            server.stop()
        if interrupted and not a.keep_work:
            shutil.rmtree(work, ignore_errors=True)

    commits = [p["ms_per_commit"] for p in results["pgbench_samples"] if p.get("valid")]
    results["pgbench"] = spread("ms_per_commit", commits)
    floors = {
        key: spread(
            "ms_per_task",
            [f[key]["ms_per_task"] for f in results["floor_samples"] if f[key].get("valid")],
        )
        for key in ("W1", "W3")
    }
    results["floor"] = {k: v for k, v in floors.items() if v} or None
    results["meta"]["loadavg_end"] = os.getloadavg()
    if native_build() != build_info:
        problems.append(
            "cloacina's native module changed during the run (rebuilt?): the numbers mix builds"
        )
    rows, summary, trows = build(results)
    results["summary"] = summary
    all_problems = problems_of(results)
    results["problems"] = all_problems

    print()
    if debug:
        print(
            "WARNING: cloacina is a DEBUG build (its native module has debug sections): "
            "these numbers are not meaningful; use a release build (nox -s bench_pg)"
        )
    if busy:
        print("WARNING: " + busy)
    for w in (results["server"] or {}).get("warnings", []):
        print("WARNING: " + w)
    srv = results["server"] or {}
    fs = srv.get("filesystem") or {}
    print(
        f"cloacina on PostgreSQL {stamp}  (PostgreSQL {srv.get('server_version', '?')}, "
        f"fsync={srv.get('fsync', '?')}, synchronous_commit={srv.get('synchronous_commit', '?')}"
        f"{', data on ' + fs['type'] + ' ' + fs['device'] if fs else ''}; median of "
        f"{a.cloacina_reps} reps for cloacina, {a.reps} for DBOS; chain {a.chain}, runs "
        f"{a.runs}, concurrent {a.concurrent}{', QUICK sizes' if a.quick else ''})"
    )
    if results["pgbench"]:
        p = results["pgbench"]
        print(
            f"pgbench one-row commit: {p['ms_per_commit']:.3f} ms (median of {p['samples']}: "
            f"start, middle, end of the run; {p['min_ms']:.3f}-{p['max_ms']:.3f})"
        )
    sqlite_harness.print_table(
        [
            "measure",
            "cloacina PG",
            "DBOS PG",
            "cloacina vs DBOS",
            "cloacina SQLite",
            "cloacina SQLite(full)",
        ],
        rows,
    )
    if trows:
        print()
        sqlite_harness.print_table(["target", "", "measured", "met"], trows)
    if all_problems:
        print()
        print("NOT COUNTED / FAILED:")
        for p in all_problems:
            print(f"  - {p}")
    rdir = Path(a.results_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    benchlib.write_json(str(rdir / f"pg-{stamp}.json"), results)
    benchlib.write_json(str(rdir / "pg-latest.json"), results)
    print()
    print(f"results: {rdir / 'pg-latest.json'} and {rdir / ('pg-' + stamp + '.json')}")
    if not a.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if all_problems else 0


if __name__ == "__main__":
    sys.exit(main())
