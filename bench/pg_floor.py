"""The SQL floor of W1 and W3 on PostgreSQL: the statements cloacina commits for them,
replayed by pgbench (one client, prepared statements, C), with no engine, no Python and
no task bodies. What is left of a workload's time above its floor is the engine's own.

- W1, a step of a chain: one statement finishes a task and starts the next one (the
  plain batch of `rust/store/postgres/write.rs`), one commit per task.
- W3, a run of a 3-task chain: four statements, each its own commit, as the engine
  commits them: the run's insert with its tasks and its first task's start (write.rs's
  `insert_run`), two steps, and the last step with the run's end.

The statements are copies of the engine's; keep them in step with write.rs and the
migrations. Each script counts what it did (attempts, completed runs), checked afterwards,
so that a statement matching no row cannot pass for a fast commit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchlib

CHAIN = 100  # task rows of the W1 run the steps cycle through
OWNER = "floor-engine"  # no colon: pgbench reads ":name" as a variable, even in quotes
OUTPUT = '{"x": 1}'  # what a W1 or W3 task writes
DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"  # postgres/mod.rs

# Finishing `$task` of `$run` and starting `$next`, as write.rs's plain batch does (the
# attempt counts the steps instead of being a bound value: the check below).
STEP = (
    "WITH f AS (UPDATE run_tasks SET status = 'completed', output = '{output}', error = NULL, "
    "traceback = NULL, finished_at = {at}, owner = '{owner}', reason = NULL "
    "WHERE run_id = {run} AND task_id = {task}) "
    "UPDATE run_tasks SET status = 'running', attempts = attempts + 1, owner = '{owner}', "
    "started_at = {at}, finished_at = NULL, ready_at = NULL "
    "WHERE run_id = {run} AND task_id = {next};"
)
# Finishing the last task and the run (write.rs's plain batch, FinishRun).
LAST = (
    "WITH f AS (UPDATE run_tasks SET status = 'completed', output = '{output}', error = NULL, "
    "traceback = NULL, finished_at = {at}, owner = '{owner}', reason = NULL "
    "WHERE run_id = {run} AND task_id = {task}) "
    "UPDATE runs SET status = 'completed', error = NULL, finished_at = {at}, owner = NULL "
    "WHERE run_id = {run} AND (owner = '{owner}' OR owner IS NULL);"
)


def w1_script() -> str:
    """One W1 step per transaction, on task `i` of the prepared chain."""
    step = STEP.format(
        output=OUTPUT,
        at=":i::bigint",
        owner=OWNER,
        run="'floor-w1'",
        task="'t' || :i::text",
        next="'t' || (:i + 1)::text",
    )
    return f"\\set i random(0, {CHAIN - 2})\n{step}\n"


def w3_script() -> str:
    """One W3 run per transaction: a new run of three tasks, four commits."""
    run = "'floor-w3-' || :r::text"
    owner = f"'{OWNER}'::text"
    # write.rs's insert_run: the run, its tasks, its first task started, one statement.
    insert = (
        "WITH r AS (INSERT INTO runs (run_id, workflow, version, status, input, owner, "
        "created_at, started_at, lease_expires_at, idempotency_key) "
        f"VALUES ({run}, 'floor_w3', '0123456789abcdef', "
        f"CASE WHEN {owner} IS NULL THEN 'queued' ELSE 'running' END, '{{\"x\": 0}}', {owner}, "
        f":r::bigint, CASE WHEN {owner} IS NULL THEN NULL ELSE :r::bigint END, "
        f"CASE WHEN {owner} IS NULL THEN NULL ELSE {DB_NOW} + 30000000 END, NULL) "
        "ON CONFLICT DO NOTHING RETURNING run_id), "
        "t AS (INSERT INTO run_tasks (run_id, task_id, position, dependencies, status, attempts, "
        "owner, started_at) "
        "SELECT r.run_id, x.task_id, x.position, x.dependencies, x.status, x.attempts, x.owner, "
        "x.started_at "
        "FROM r, unnest(ARRAY['f0', 'f1', 'f2'], ARRAY[0, 1, 2], "
        """ARRAY['[]', '["f0"]', '["f1"]'], ARRAY['running', 'pending', 'pending'], """
        f"ARRAY[1, 0, 0], ARRAY[{owner}, NULL, NULL], ARRAY[:r::bigint, NULL, NULL]) "
        "AS x(task_id, position, dependencies, status, attempts, owner, started_at)) "
        "SELECT run_id FROM r;"
    )
    lines = ["\\set r random(1, 1000000000000000)", insert]
    for task, nxt in (("'f0'", "'f1'"), ("'f1'", "'f2'")):
        lines.append(
            STEP.format(output=OUTPUT, at=":r::bigint", owner=OWNER, run=run, task=task, next=nxt)
        )
    lines.append(LAST.format(output=OUTPUT, at=":r::bigint", owner=OWNER, run=run, task="'f2'"))
    return "\n".join(lines) + "\n"


def pgbench_latency(
    exe: str, url: str, script: Path, seconds: float, schema: str | None = None
) -> dict[str, Any]:
    """Runs `script` with one pgbench client for `seconds` (in `schema`, when given):
    transactions, latency_ms and tps as pgbench counted them, or an error."""
    cmd = [exe, "-n", "-c", "1", "-j", "1", "-M", "prepared"]
    cmd += ["-T", str(max(1, round(seconds))), "-f", str(script), url]
    env = dict(os.environ)
    if schema is not None:
        env["PGOPTIONS"] = f"-c search_path={schema}"
    out: dict[str, Any] = {}
    try:
        p = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as e:
        out["error"] = benchlib.describe_exception(e)
        return out
    text = p.stdout + p.stderr
    out["output"] = text.strip().splitlines()[-12:]
    if p.returncode != 0:
        out["error"] = f"pgbench exit code {p.returncode}"
        return out
    for line in text.splitlines():
        if "number of transactions actually processed" in line and ":" in line:
            out["transactions"] = int(line.split(":")[1].split("/")[0].strip())
        elif line.startswith("latency average ="):
            out["latency_ms"] = float(line.split("=")[1].split()[0])
        elif line.startswith("tps ="):
            out["tps"] = float(line.split("=")[1].split()[0])
    if "tps" not in out or "transactions" not in out:
        out["error"] = "pgbench's output not understood"
    return out


def prepare(url: str, schema: str) -> None:
    """Creates and migrates `schema` with cloacina itself (a Runner in a subprocess), and
    the W1 run whose chain the steps cycle through."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"schema {schema!r}: lower-case letters, digits and _ only")
    code = "import sys, cloacina; cloacina.Runner(sys.argv[1], schema=sys.argv[2]).close()"
    subprocess.run([sys.executable, "-c", code, url, schema], check=True, timeout=120)
    import psycopg

    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as con:
        con.execute(
            "INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, "
            "started_at, lease_expires_at) VALUES ('floor-w1', 'floor_w1', '0123456789abcdef', "
            "'running', '{}', %s, 1, 1, 1)",
            (OWNER,),
        )
        con.execute(
            "INSERT INTO run_tasks (run_id, task_id, position, dependencies, status) "
            "SELECT 'floor-w1', 't' || i, i, '[]', 'pending' FROM generate_series(0, %s) i",
            (CHAIN - 1,),
        )


def counts(url: str, schema: str) -> tuple[int, int]:
    """(W1 steps, W3 runs completed) so far: the attempts of the W1 chain's tasks, and the
    completed runs of W3 whose three tasks completed."""
    import psycopg

    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as con:
        steps = con.execute(
            "SELECT coalesce(sum(attempts), 0) FROM run_tasks WHERE run_id = 'floor-w1'"
        ).fetchone()[0]
        runs = con.execute(
            "SELECT count(*) FROM runs r WHERE workflow = 'floor_w3' AND status = 'completed' "
            "AND (SELECT count(*) FROM run_tasks t WHERE t.run_id = r.run_id "
            "AND t.status = 'completed') = 3"
        ).fetchone()[0]
    return int(steps), int(runs)


def measure(exe: str, url: str, schema: str, seconds: float, work: Path) -> dict[str, Any]:
    """One pgbench measurement of each floor; `schema` must be prepared (`prepare`).
    Returns {"W1": {...}, "W3": {...}}, each with ms_per_task and valid, or an error."""
    out: dict[str, Any] = {}
    for key, script, tasks in (("W1", w1_script(), 1), ("W3", w3_script(), 3)):
        path = work / f"floor-{key}.sql"
        path.write_text(script)
        try:
            before = counts(url, schema)
            res = pgbench_latency(exe, url, path, seconds, schema)
            after = counts(url, schema)
        except Exception as e:  # psycopg errors
            res = {"error": benchlib.describe_exception(e)}
        else:
            done = after[0] - before[0] if key == "W1" else after[1] - before[1]
            res["rows_done"] = done
            if "error" not in res:
                res["ms_per_task"] = 1000.0 / res["tps"] / tasks
                res["valid"] = done == res["transactions"] > 0
                if not res["valid"]:
                    res["error"] = f"{done} done for {res['transactions']} transactions"
        res.setdefault("valid", False)
        out[key] = res
    return out
