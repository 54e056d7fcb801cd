"""The PostgreSQL server restarts in the middle of runs: the owner's writer reconnects
(with backoff) and carries on, waiters elsewhere keep following the runs; every run
completes, every task ran exactly once, nobody took a run over, no wait hangs."""

from __future__ import annotations

import time

import pytest
from pg_helpers import final

pytestmark = pytest.mark.postgres

RUNS = 2
N = 11
SLEEP = 0.3
WAITERS = 8


@pytest.mark.parametrize(
    ("mode", "down_for", "at_tasks"),
    [("fast", 0.0, (2, 5, 8)), ("immediate", 0.0, (2, 5, 8)), ("fast", 2.0, (2,))],
    ids=["fast", "immediate", "down-2s"],
)
def test_server_restart_mid_run(private_pg, pg_tenant, mode, down_for, at_tasks):
    """`fast` ends every session cleanly; `immediate` is a crash of the server (it
    recovers from its log at startup); `down-2s` keeps it stopped for 2 s, refusing
    connections, as a real restart or failover may (every waiter polls meanwhile). The
    server restarts when the runs reach each task of `at_tasks`."""
    t = pg_tenant(private_pg.url)
    name = f"pg_restart_{mode}_{int(down_for)}"
    flow = f"chain:{name}:{N}:{SLEEP}"
    ids = [f"{name}_s{i:02d}" for i in range(N)]
    keys = [f"k{i}" for i in range(RUNS)]
    timeout = ("--timeout", "60")  # every wait is bounded

    # The waiter process has WAITERS threads waiting for each run: each wakes when its
    # store's listening connection is lost, right as the server goes down, and reads.
    waiters = ("--waiters", str(WAITERS))
    with t.proc("follower", "--flow", flow, *timeout, *waiters, label="waiter") as waiter:
        waiter.expect("runner_open", timeout=60)
        with t.proc("owner", "--flow", flow, "--runs", str(RUNS), *timeout,
                    label="owner") as owner:  # fmt: skip
            owner.expect("runner_open", timeout=60)
            run_ids = owner.expect("started", timeout=30)["run_ids"]
            for run_id in run_ids:
                waiter.send(run_id)  # another process waits for them across the restart
            waiter.send("DONE")
            restarts = []
            for k in at_tasks:
                t.wait_effect(
                    lambda es, k=k: (
                        {e.key for e in es if e.task == ids[k] and e.phase == "start"} == set(keys)
                    ),
                    owner,
                )
                before = time.time()
                took = private_pg.restart(mode, down_for=down_for)
                restarts.append((before, time.time()))
                print(f"\nserver restart ({mode}, down for {down_for} s) took {took:.2f} s")
            before, after = restarts[0][0], restarts[-1][1]
            finished = [owner.expect("finished", timeout=90) for _ in run_ids]
            owner.expect("closed", timeout=30)
            assert owner.finish() == 0, owner.describe()
            waited = [waiter.expect("finished", timeout=90) for _ in run_ids]
            waiter.expect("closed", timeout=30)
            assert waiter.finish() == 0, waiter.describe()
            done_at = time.time()
    print(f"runs done {done_at - after:.2f} s after the server was last back")
    reconnects = [ln for ln in owner.stderr().splitlines() if "reconnect" in ln]
    print("owner:", *reconnects[:3], sep="\n  ")

    assert final(t, run_ids) == dict.fromkeys(run_ids, "completed")
    for key, result, seen in zip(keys, finished, waited, strict=True):
        assert result["status"] == "completed", result
        assert result["context"] == {"key": key, "acc": ids}, result
        assert result["events"] == [], result["events"]
        assert seen["run_id"] == result["run_id"] and seen["status"] == "completed", seen
        assert all(task["attempts"] == 1 for task in result["tasks"].values()), result["tasks"]

    # Exactly once, all in the owner; the restart really was in the middle of the runs.
    effects = t.effects()
    starts = t.starts()
    assert set(starts) == {(k, tid) for k in keys for tid in ids}
    assert [k for k, n in starts.items() if n != 1] == [], starts
    assert {e.pid for e in effects} == {owner.pid}
    assert any(e.at < before for e in effects) and any(e.at > after for e in effects)
    runs = t.rows("SELECT status, owner, owner_epoch FROM runs")
    assert runs == [{"status": "completed", "owner": None, "owner_epoch": 0}] * RUNS, runs
    assert t.rows("SELECT count(*) AS n FROM run_events") == [{"n": 0}]
    assert t.rows("SELECT count(*) AS n FROM earlier_attempts") == [{"n": 0}]
