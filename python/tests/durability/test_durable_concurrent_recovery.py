"""Two processes recover the same killed run at the same moment: one takes it over."""

from __future__ import annotations

import time

from durable_helpers import events_of, integrity

N = 5
K = 2
REPS = 5


def test_two_processes_recovering_at_once_run_the_rest_once(durable):
    for rep in range(REPS):
        d = durable(f"dur_corecover{rep}")
        ids = [f"{d.name}_s{i:02d}" for i in range(N)]
        opts = ("--n", str(N), "--sleep", "0.1", "--input", '{"acc": []}')
        with d.child("start", "chain", *opts) as proc:
            proc.expect("runner_open")
            run_id = proc.expect("started")["run_id"]
            d.wait_marker(ids[K], proc)
            proc.sigkill()
        assert integrity(d.snapshot()) == "ok"

        start_at = str(time.time() + 0.5)  # after both interpreters have imported cloacina
        extra = ("--run-id", run_id, "--start-at", start_at)
        with (
            d.child("recover", "chain", *opts, *extra, label=f"r{rep}-b") as b,
            d.child("recover", "chain", *opts, *extra, label=f"r{rep}-c") as c,
        ):
            results = []
            for proc in (b, c):
                proc.expect("runner_open")
                results.append(proc.expect("finished"))
                assert proc.finish() == 0, proc.describe()

        for result in results:
            assert result["status"] == "completed", (rep, result)
            assert result["context"] == {"acc": ids}, rep
        final = results[0]
        executions = d.executions()
        assert executions == {**dict.fromkeys(ids, 1), ids[K]: 2}, (rep, executions)
        assert len(events_of(final, "recovered")) == 1, (rep, final["events"])
        history = final["tasks"][ids[K]]["history"]
        assert [(h["attempt"], h["status"]) for h in history] == [(1, "failed"), (2, "completed")]
        assert integrity(d.db_path) == "ok"
