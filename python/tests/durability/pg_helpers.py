"""Helpers of the PostgreSQL durability tests (test_pg_*.py): a tenant (a fresh schema)
and its processes, the side-effect log, the server's clock and restarts."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from durable_helpers import SCRIPTS, Child
from helpers import pg_connect, pg_query, with_schema

PG_PROC = SCRIPTS / "pg_proc.py"
PG_FLOWS = SCRIPTS / "pg_flows.py"

# Right after the server (re)started, every engine is reconnecting, so for this long a
# run is taken over only when its lease expired, not because its owner's liveness lock
# is missing (see rust/store/postgres/read.rs, orphan_candidates).
RESTART_GRACE = 10.0


class Effect(NamedTuple):
    """One line of the side-effect log (see scripts/pg_flows.py)."""

    ns: int
    pid: int
    key: str
    task: str
    phase: str

    @property
    def at(self) -> float:
        """Epoch seconds."""
        return self.ns / 1e9


@dataclass
class Tenant:
    """One test's schema on a PostgreSQL server, its working directory and side-effect log."""

    server_url: str
    schema: str
    workdir: Path

    @property
    def url(self) -> str:
        """The server URL naming the schema (libpq's options=-csearch_path=...)."""
        return with_schema(self.server_url, self.schema)

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.schema}.effects"

    def rows(self, sql: str, *params) -> list[dict]:
        return pg_query(self.url, sql, params)

    def proc(self, mode: str, *args: str, label: str, url: str | None = None) -> Child:
        """scripts/pg_proc.py MODE on this tenant (the schema named in the URL)."""
        return Child(
            PG_PROC,
            [mode, "--db", url or self.url, *args],
            self.workdir,
            label,
            env={"CLOACINA_TEST_LOG": str(self.log)},
        )

    def worker(self, flow: str, *args: str, label: str) -> Child:
        """`python -m cloacina --db SERVER --schema S worker pg_flows.py` defining `flow`."""
        return Child(
            None,
            ["-m", "cloacina", "--db", self.server_url, "--schema", self.schema, "worker",
             str(PG_FLOWS), *args],
            self.workdir,
            label,
            env={"CLOACINA_TEST_LOG": str(self.log), "CLOACINA_TEST_FLOW": flow},
        )  # fmt: skip

    def effects(self) -> list[Effect]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text(encoding="utf-8").splitlines():
            ns, pid, key, task, phase = line.split(" ")
            out.append(Effect(int(ns), int(pid), key, task, phase))
        return out

    def starts(self) -> Counter:
        """(run key, task id) -> how many times the task started."""
        return Counter((e.key, e.task) for e in self.effects() if e.phase == "start")

    def wait_effect(self, ok, proc: Child | None = None, timeout: float = 30.0) -> list[Effect]:
        """Waits until ok(effects) holds; returns the effects."""
        deadline = time.monotonic() + timeout
        while True:
            effects = self.effects()
            if ok(effects):
                return effects
            if proc is not None:
                assert proc.proc.poll() is None, f"the child exited\n{proc.describe()}"
            assert time.monotonic() < deadline, (
                f"side effects never matched; last: {effects[-10:]}"
                + (f"\n{proc.describe()}" if proc else "")
            )
            time.sleep(0.005)

    def tasks(self, run_id: str) -> dict[str, dict]:
        return {
            r["task_id"]: r for r in self.rows("SELECT * FROM run_tasks WHERE run_id = ?", run_id)
        }

    def attempts(self, run_id: str) -> dict[str, list[tuple[int, str]]]:
        """task id -> [(attempt, status)...] as stored (task_attempts view), oldest first."""
        out: dict[str, list[tuple[int, str]]] = {}
        for r in self.rows(
            "SELECT task_id, attempt, status FROM task_attempts WHERE run_id = ? "
            "ORDER BY task_id, attempt",
            run_id,
        ):
            out.setdefault(r["task_id"], []).append((r["attempt"], r["status"]))
        return out


def owner_pid(owner: str | None) -> int | None:
    """The pid in an engine's owner id (`host:pid:start:nonce`)."""
    if not owner:
        return None
    return int(owner.rsplit(":", 3)[1])


def server_uptime(server_url: str) -> float:
    """Seconds since the server (re)started, on its clock."""
    with pg_connect(server_url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM clock_timestamp() - pg_postmaster_start_time()) AS up"
        ).fetchone()
        return float(row["up"])


def wait_past_restart_grace(server_url: str) -> None:
    """Sleeps until the server has been up for longer than RESTART_GRACE: only then is a
    dead owner seen at once (by its liveness lock) rather than when its lease expires."""
    left = RESTART_GRACE + 0.5 - server_uptime(server_url)
    if left > 0:
        time.sleep(left)


def final(tenant: Tenant, run_ids, timeout: float = 60.0) -> dict[str, str]:
    """Waits until every run is final in the store; run id -> status."""
    ids = list(run_ids)
    deadline = time.monotonic() + timeout
    while True:
        rows = tenant.rows("SELECT run_id, status FROM runs WHERE run_id = ANY(?)", ids)
        statuses = {r["run_id"]: r["status"] for r in rows}
        if len(statuses) == len(ids) and all(
            s in ("completed", "failed", "cancelled") for s in statuses.values()
        ):
            return statuses
        assert time.monotonic() < deadline, f"runs not final: {statuses}"
        time.sleep(0.05)
