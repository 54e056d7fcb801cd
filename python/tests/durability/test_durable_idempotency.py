"""Two processes race to start runs under the same idempotency keys: one run per key."""

from __future__ import annotations

from collections import Counter

from cloacina import Runner
from durable_helpers import integrity

KEYS = [f"order-{i}" for i in range(15)]


def race(d, keys: list[str]) -> dict[str, set[str]]:
    """Starts two racing processes; each starts one run per key. Returns key -> run ids."""
    opts = ("--sleep", "0.01", "--timeout", "30")
    with (
        d.child("race", "single", *opts, label="racer-a") as a,
        d.child("race", "single", *opts, label="racer-b") as b,
    ):
        racers = (a, b)
        for racer in racers:
            racer.expect("ready")
        for racer in racers:  # both open their Runner on the file at the same moment
            racer.send("OPEN")
        for racer in racers:
            racer.expect("opened")
        ids: dict[str, set[str]] = {}
        for key in keys:
            for racer in racers:  # both submissions are written before either is read
                racer.send(key)
            for racer in racers:
                event = racer.expect("submitted")
                assert event["key"] == key
                ids.setdefault(key, set()).add(event["run_id"])
        for racer in racers:
            racer.send("DONE")
        for racer in racers:
            done = racer.expect("done")
            assert set(done["statuses"].values()) == {"completed"}, done
            assert racer.finish(30) == 0, racer.describe()
    return ids


def check(d, ids: dict[str, set[str]], keys: list[str]) -> None:
    for key, run_ids in ids.items():
        assert len(run_ids) == 1, f"two runs for {key}: {run_ids}"
    rows = d.rows("SELECT run_id, idempotency_key, status FROM runs")
    assert len(rows) == len(keys), rows
    assert {r["idempotency_key"]: r["run_id"] for r in rows} == {
        k: next(iter(v)) for k, v in ids.items()
    }
    assert {r["status"] for r in rows} == {"completed"}
    # Each run's only task ran once: neither process ran the other's run.
    ran = Counter(line.split(" ")[1] for line in d.log_lines())
    assert ran == dict.fromkeys(keys, 1), ran
    assert integrity(d.db_path) == "ok"


def test_two_processes_racing_with_the_same_keys_get_one_run_each(durable):
    d = durable("dur_idem_race")
    Runner(d.url).close()  # the schema exists; the race is about the submissions
    check(d, race(d, KEYS), KEYS)


def test_two_processes_racing_on_a_new_database_file(durable):
    """The same, with both processes creating the database file at the same moment (as
    two workers deployed together would). Repeated on new files: the window is small."""
    for rep in range(16):
        d = durable(f"dur_idem_fresh{rep}")
        assert not d.db_path.exists()
        keys = KEYS[:3]
        check(d, race(d, keys), keys)


def test_same_key_after_the_first_process_was_killed(durable):
    """A retried submission (after the submitter crashed) gets the interrupted run back,
    which then completes; nothing ran twice except the interrupted task."""
    d = durable("dur_idem_crash")
    ids = [f"{d.name}_s{i:02d}" for i in range(4)]
    opts = ("--n", "4", "--sleep", "0.15", "--input", '{"acc": []}', "--key", "order-42")
    with d.child("start", "chain", *opts) as proc:
        proc.expect("runner_open")
        run_id = proc.expect("started")["run_id"]
        d.wait_marker(ids[1], proc)
        proc.sigkill()
    assert integrity(d.snapshot()) == "ok"

    with d.child("start", "chain", *opts) as proc:
        proc.expect("runner_open")
        again = proc.expect("started")
        result = proc.expect("finished")
        assert proc.finish() == 0, proc.describe()

    assert again["run_id"] == run_id
    assert result["run_id"] == run_id
    assert result["status"] == "completed", result
    assert result["context"] == {"acc": ids}
    assert d.executions() == {**dict.fromkeys(ids, 1), ids[1]: 2}
    rows = d.rows("SELECT run_id, idempotency_key FROM runs")
    assert rows == [{"run_id": run_id, "idempotency_key": "order-42"}]
