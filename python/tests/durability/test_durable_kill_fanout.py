"""SIGKILL at a random moment of a wide fan-out, 20 times; recovery in a new process."""

from __future__ import annotations

import os
import random
import time

from durable_helpers import events_of, integrity

WIDTH = 50
REPS = 20
SLEEP = 0.04  # a run takes ~0.3-0.4 s at max_concurrency 8, so most kills land mid-run
SEED = int(os.environ.get("CLOACINA_DURABILITY_SEED", "20240611"))


def test_random_kills_of_a_fan_out(durable):
    rng = random.Random(SEED)
    mid_run = 0
    for rep in range(REPS):
        delay = rng.uniform(0.05, 0.5)
        d = durable(f"dur_fan_r{rep:02d}")
        root, join = f"{d.name}_root", f"{d.name}_join"
        parts = [f"{d.name}_p{i:02d}" for i in range(WIDTH)]
        everything = [root, *parts, join]
        seed = rep + 1
        opts = ("--n", str(WIDTH), "--sleep", str(SLEEP), "--input", f'{{"seed": {seed}}}')
        hold = ("--hold", "60")  # the starting process lives on until it is killed
        where = f"rep {rep} (seed {SEED}, kill after {delay:.3f} s)"

        with d.child("start", "fanout", *opts, *hold) as proc:
            proc.expect("runner_open")
            run_id = proc.expect("started")["run_id"]
            time.sleep(delay)
            proc.sigkill()

        crash = d.snapshot()
        assert integrity(crash) == "ok", where
        at_kill = d.tasks(run_id, path=crash)
        run_status = d.rows("SELECT status FROM runs WHERE run_id = ?", run_id, path=crash)
        killed_mid_run = run_status[0]["status"] != "completed"
        mid_run += killed_mid_run
        completed = {t for t, row in at_kill.items() if row["status"] == "completed"}
        running = sorted(t for t, row in at_kill.items() if row["status"] == "running")
        before = d.executions()
        for t in completed:
            assert before[t] == 1, f"{where}: {t} completed once before the kill: {before}"

        result = d.run_child("recover", "fanout", *opts, "--run-id", run_id)

        assert result["status"] == "completed", f"{where}: {result}"
        base = seed * 2
        expected = {"seed": seed, "base": base, "total": sum(base + i for i in range(WIDTH))}
        expected.update({p: base + i for i, p in enumerate(parts)})
        assert result["context"] == expected, where
        executions = d.executions()
        for t in everything:
            assert executions[t] >= 1, f"{where}: {t} never ran: {executions}"
            assert executions[t] <= 2, f"{where}: {t} ran {executions[t]} times"
        for t in completed:
            assert executions[t] == 1, f"{where}: {t} was completed at the kill, ran again"
        for t in running:
            history = result["tasks"][t]["history"]
            assert [h["status"] for h in history] == ["failed", "completed"], (where, t)
            assert history[0]["error"].startswith("interrupted"), (where, t, history)
        recovered = events_of(result, "recovered")
        if killed_mid_run:
            assert len(recovered) == 1, f"{where}: {result['events']}"
            assert sorted(recovered[0]["detail"]["interrupted_tasks"]) == running, where
        else:
            assert recovered == [], f"{where}: a completed run was recovered"
            assert executions == {t: 1 for t in everything}, where
        assert integrity(d.db_path) == "ok", where
    print(f"{mid_run} of {REPS} kills interrupted a live run (seed {SEED})")
    # The kills must mostly have interrupted live runs, or this test tests nothing.
    assert mid_run >= REPS // 4, f"only {mid_run} of {REPS} kills landed before the run ended"


def test_kill_right_after_start(durable):
    """Killed as soon as start() returned: no task may have finished; all run once."""
    d = durable("dur_fan_at_once")
    parts = [f"{d.name}_p{i:02d}" for i in range(WIDTH)]
    everything = [f"{d.name}_root", *parts, f"{d.name}_join"]
    opts = ("--n", str(WIDTH), "--sleep", str(SLEEP), "--input", '{"seed": 5}')
    with d.child("start", "fanout", *opts, "--hold", "60") as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        proc.sigkill()
    crash = d.snapshot()
    assert integrity(crash) == "ok"
    assert d.rows("SELECT status FROM runs", path=crash)[0]["status"] in ("pending", "running")

    result = d.run_child("recover", "fanout", *opts, "--run-id", run_id)
    assert result["status"] == "completed", result
    assert result["context"]["total"] == sum(10 + i for i in range(WIDTH))
    executions = d.executions()
    assert set(executions) == set(everything)
    assert max(executions.values()) <= 2, executions
    assert integrity(d.db_path) == "ok"
