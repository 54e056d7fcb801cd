"""Recovery never takes a run away from a live owner."""

from __future__ import annotations

from durable_helpers import integrity

N = 6


def test_recover_in_another_process_leaves_a_live_run_alone(durable):
    d = durable("dur_live_owner")
    ids = [f"{d.name}_s{i:02d}" for i in range(N)]
    opts = ("--n", str(N), "--sleep", "0.25", "--input", '{"acc": []}')

    with d.child("start", "chain", *opts) as owner:
        owner.expect("runner_open")
        run_id = owner.expect("started")["run_id"]
        d.wait_marker(ids[0], owner)
        # Same workflow defined, recover() called every 0.2 s while the owner works.
        with d.child("watch", "chain", *opts, "--hold", "1.2") as watcher:
            watcher.expect("runner_open")
            watched = watcher.expect("watched", timeout=30)
            assert watcher.finish() == 0, watcher.describe()
        result = owner.expect("finished", timeout=30)
        assert owner.finish() == 0, owner.describe()

    assert watched["taken"] == [], watched
    assert result["run_id"] == run_id
    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    assert d.executions() == dict.fromkeys(ids, 1)
    assert result["events"] == [], result["events"]
    assert all(t["attempts"] == 1 for t in result["tasks"].values()), result["tasks"]
    assert integrity(d.db_path) == "ok"
