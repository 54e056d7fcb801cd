"""An owner frozen (SIGSTOP) past its lease on PostgreSQL: its connection, and so its
liveness lock, stay alive, so another process takes the run over when the lease expires
on the database's clock. Woken (SIGCONT), the old owner is fenced off: whatever its
stale attempt does is dropped, every task is completed exactly once in the store, and
the old owner's engine goes on working."""

from __future__ import annotations

import os
import signal
import time

import pytest
from pg_helpers import owner_pid

pytestmark = pytest.mark.postgres

LEASE = 2.0
N = 4
SLEEP = 0.5


def test_frozen_owner_is_fenced_off_after_its_lease_and_keeps_working(pg_tenant):
    t = pg_tenant()
    name = "pg_stall"
    flow = f"chain:{name}:{N}:{SLEEP}"
    ids = [f"{name}_s{i:02d}" for i in range(N)]
    lease = ("--lease", str(LEASE))

    with t.proc("follower", "--flow", flow, *lease, label="taker") as taker:
        taker.expect("runner_open", timeout=60)
        with t.proc("owner", "--flow", flow, *lease, "--again", label="owner") as owner:
            owner.expect("runner_open", timeout=60)
            (run_id,) = owner.expect("started", timeout=30)["run_ids"]
            t.wait_effect(lambda es: any(e.task == ids[1] for e in es), owner)
            os.kill(owner.pid, signal.SIGSTOP)
            stopped = time.monotonic()
            try:
                deadline = stopped + 20
                while True:
                    row = t.rows("SELECT owner, owner_epoch FROM runs WHERE run_id = ?", run_id)[0]
                    if owner_pid(row["owner"]) == taker.pid:
                        break
                    assert owner_pid(row["owner"]) == owner.pid, row
                    assert time.monotonic() < deadline, "the run was never taken over"
                    time.sleep(0.02)
                taken_after = time.monotonic() - stopped
                # The frozen owner's connection is alive: it still holds its liveness lock.
                locks = t.rows(
                    "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
                )[0]["n"]
                assert locks >= 2, locks
            finally:
                os.kill(owner.pid, signal.SIGCONT)
            woke = time.time()
            print(f"\ntaken over {taken_after:.2f} s after SIGSTOP (lease {LEASE} s)")

            taker.send(run_id)
            result = taker.expect("finished", timeout=30)
            # The woken owner's wait returns the run as the taker finished it, and its
            # engine still runs a new run of its own.
            mine = owner.expect("finished", timeout=30)
            again = owner.expect("again", timeout=30)
            closed = owner.expect("closed", timeout=30)
            assert owner.finish() == 0, owner.describe()
        taker.send("DONE")
        taker.expect("closed", timeout=30)
        assert taker.finish() == 0, taker.describe()

    # Renewed every third of the lease: the run was taken once the lease had expired.
    assert LEASE * 2 / 3 - 0.2 < taken_after < LEASE + 5, taken_after
    assert result["status"] == "completed", result
    assert result["context"] == {"key": "k0", "acc": ids}, result["context"]
    assert mine["status"] == "completed" and mine["context"] == result["context"], mine
    assert again["status"] == "completed", again
    assert again["context"] == {"key": "again", "acc": ids}, again
    assert "Traceback" not in owner.stderr(), owner.describe()
    assert any("taken over" in w for w in closed["warnings"]), closed["warnings"]

    # In the store: every task completed exactly once, the stalled one after an
    # interrupted attempt; one takeover.
    expected = {
        ids[0]: [(1, "completed")],
        ids[1]: [(1, "failed"), (2, "completed")],
        ids[2]: [(1, "completed")],
        ids[3]: [(1, "completed")],
    }
    assert t.attempts(run_id) == expected
    tasks = t.tasks(run_id)
    assert {tid: (r["status"], owner_pid(r["owner"])) for tid, r in tasks.items()} == {
        ids[0]: ("completed", owner.pid),
        **{tid: ("completed", taker.pid) for tid in ids[1:]},
    }
    events = t.rows("SELECT kind FROM run_events WHERE run_id = ?", run_id)
    assert [e["kind"] for e in events] == ["recovered"], events
    run = t.rows("SELECT status, owner, owner_epoch FROM runs WHERE run_id = ?", run_id)[0]
    assert run == {"status": "completed", "owner": None, "owner_epoch": 1}, run

    # The side effects: the frozen attempt may have finished its body after SIGCONT, but
    # nothing after it ran in the old owner; the taker ran the stalled task and the rest.
    effects = [(e.task, e.phase, e.pid) for e in t.effects() if e.key == "k0"]
    frozen = [(ids[1], "start", owner.pid), (ids[1], "finish", owner.pid)]
    taken = [(tid, phase, taker.pid) for tid in ids[1:] for phase in ("start", "finish")]
    assert effects[:2] == [(ids[0], "start", owner.pid), (ids[0], "finish", owner.pid)]
    assert effects[2] == frozen[0], effects
    rest = effects[3:]
    assert frozen[1] in rest, effects  # it finished once woken...
    late = [e for e in t.effects() if e.key == "k0" and e.pid == owner.pid and e.phase == "finish"]
    assert late[-1].at >= woke - 0.05, late  # ...only once woken
    rest.remove(frozen[1])
    assert rest == taken, effects
