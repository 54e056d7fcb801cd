"""A stalled owner (alive, not heartbeating) loses its run when its lease expires."""

from __future__ import annotations

import os
import signal
import time

from durable_helpers import events_of, integrity

N = 4
LEASE = 1.0


def test_stalled_owner_is_fenced_off_and_keeps_working(durable):
    """SIGSTOP the owner mid-task (a long GC pause, a suspended laptop): another process
    takes the run over once the lease expired. When the owner wakes up, the attempt it
    was running is stale: its result must be discarded without running later tasks
    twice, and the owner's engine must go on working (its wait returns the run's result,
    it can start new runs)."""
    d = durable("dur_lease_stall")
    ids = [f"{d.name}_s{i:02d}" for i in range(N)]
    opts = ("--n", str(N), "--sleep", "0.5", "--input", '{"acc": []}', "--lease", str(LEASE))

    with d.child("start", "chain", *opts, "--again", "--hold", "60") as owner:
        owner.expect("runner_open")
        run_id = owner.expect("started")["run_id"]
        d.wait_marker(ids[1], owner)
        os.kill(owner.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            with d.child("recover", "chain", *opts, "--run-id", run_id) as taker:
                taker_pid = taker.expect("runner_open")["pid"]
                deadline = time.monotonic() + 20
                while f":{taker_pid}:" not in (d.rows("SELECT owner FROM runs")[0]["owner"] or ""):
                    assert time.monotonic() < deadline, "the run was never taken over"
                    time.sleep(0.02)
                taken_after = time.monotonic() - stopped
                os.kill(owner.pid, signal.SIGCONT)  # the owner wakes up, its attempt ends
                result = taker.expect("finished", timeout=30)
                assert taker.finish() == 0, taker.describe()
        finally:
            os.kill(owner.pid, signal.SIGCONT)

        # The owner was alive: the run was taken over only once its lease had expired.
        assert taken_after > LEASE * 2 / 3 - 0.1, taken_after
        assert result["status"] == "completed", result
        assert result["context"] == {"acc": ids}
        assert len(events_of(result, "recovered")) == 1, result["events"]
        # No split brain: only the stalled task ran twice.
        assert d.executions() == {**dict.fromkeys(ids, 1), ids[1]: 2}, d.executions()

        try:
            woke = owner.event(timeout=30)
        except AssertionError as exc:
            raise AssertionError(
                f"the stalled owner's wait did not return the run's result: {exc}"
            ) from None
        assert woke.get("event") == "finished", f"{woke}\n{owner.describe()}"
        assert woke["status"] == "completed", woke
        again = owner.expect("again", timeout=30)
        assert again["status"] == "completed", again
    assert d.executions() == {**dict.fromkeys(ids, 2), ids[1]: 3}, d.executions()
    assert integrity(d.db_path) == "ok"
