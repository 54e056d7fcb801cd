"""SIGKILL of a process driving runs on PostgreSQL: another live process defining the
workflow takes them over within about a second (the dead owner's liveness lock went with
its connection; no lease to wait for) and finishes them; what completed before the kill
never runs again."""

from __future__ import annotations

import json
import time

import pytest
from pg_helpers import owner_pid, wait_past_restart_grace

pytestmark = pytest.mark.postgres

RUNS = 3
N = 4
SLEEP = 0.4
TAKEOVER_LIMIT = 5.0  # the target is under 2 s (a liveness check every 0.5 s)


def test_sigkilled_owner_runs_are_taken_over_by_a_live_process(pg_tenant, pg_server_url):
    t = pg_tenant()
    # A dead owner is told by its missing lock only once the server is past its restart
    # grace period (right after a start every engine may be reconnecting).
    wait_past_restart_grace(pg_server_url)
    name = "pg_kill"
    flow = f"chain:{name}:{N}:{SLEEP}"
    ids = [f"{name}_s{i:02d}" for i in range(N)]
    keys = [f"k{i}" for i in range(RUNS)]

    with t.proc("follower", "--flow", flow, label="survivor") as survivor:
        survivor.expect("runner_open", timeout=60)
        with t.proc("owner", "--flow", flow, "--runs", str(RUNS), label="owner") as owner:
            owner.expect("runner_open", timeout=60)
            run_ids = owner.expect("started", timeout=30)["run_ids"]
            # Every run is in its second task: the first completed, the second mid-sleep.
            t.wait_effect(
                lambda es: (
                    {e.key for e in es if e.task == ids[1] and e.phase == "start"} == set(keys)
                ),
                owner,
            )
            owner.sigkill()
            killed_at = time.time()
        for run_id in run_ids:
            survivor.send(run_id)
        results = {}
        for _ in run_ids:
            result = survivor.expect("finished", timeout=30)
            results[result["run_id"]] = result
        survivor.send("DONE")
        survivor.expect("closed", timeout=30)
        assert survivor.finish() == 0, survivor.describe()

    effects = t.effects()
    survivor_starts = [e.at for e in effects if e.pid == survivor.pid and e.phase == "start"]
    recovered_at = [
        ev["at"] / 1e6 for r in results.values() for ev in r["events"] if ev["kind"] == "recovered"
    ]
    to_event = min(recovered_at) - killed_at
    to_start = min(survivor_starts) - killed_at
    print(
        f"\ntakeover after SIGKILL: first 'recovered' event {to_event:.3f} s, first task "
        f"started by the survivor {to_start:.3f} s, last run taken "
        f"{max(recovered_at) - killed_at:.3f} s"
    )
    assert 0 <= to_event < TAKEOVER_LIMIT, to_event
    assert 0 <= to_start < TAKEOVER_LIMIT, to_start

    for key, run_id in zip(keys, run_ids, strict=True):
        result = results[run_id]
        assert result["status"] == "completed", result
        assert result["context"] == {"key": key, "acc": ids}, result["context"]
        history = {
            tid: [(a, s) for a, s, _ in task["history"]] for tid, task in result["tasks"].items()
        }
        assert history == {
            ids[0]: [(1, "completed")],
            ids[1]: [(1, "failed"), (2, "completed")],
            ids[2]: [(1, "completed")],
            ids[3]: [(1, "completed")],
        }, (key, history)
        assert result["tasks"][ids[1]]["history"][0][2].startswith("interrupted")
        assert t.attempts(run_id) == history
        recovered = [ev for ev in result["events"] if ev["kind"] == "recovered"]
        assert len(recovered) == 1, result["events"]
        detail = recovered[0]["detail"]
        detail = json.loads(detail) if isinstance(detail, str) else detail
        assert owner_pid(detail["owner"]) == survivor.pid, detail
        assert owner_pid(detail["previous_owner"]) == owner.pid, detail
        assert detail["interrupted_tasks"] == [ids[1]], detail

        # The side effects: what completed before the kill ran once, in the owner; the
        # interrupted task ran again in the survivor, which ran the rest.
        mine = [(e.task, e.phase, e.pid) for e in effects if e.key == key]
        assert mine == [
            (ids[0], "start", owner.pid),
            (ids[0], "finish", owner.pid),
            (ids[1], "start", owner.pid),
            (ids[1], "start", survivor.pid),
            (ids[1], "finish", survivor.pid),
            (ids[2], "start", survivor.pid),
            (ids[2], "finish", survivor.pid),
            (ids[3], "start", survivor.pid),
            (ids[3], "finish", survivor.pid),
        ], (key, mine)

    runs = t.rows("SELECT run_id, status, owner, owner_epoch FROM runs")
    assert {r["run_id"]: (r["status"], r["owner"], r["owner_epoch"]) for r in runs} == {
        run_id: ("completed", None, 1) for run_id in run_ids
    }
