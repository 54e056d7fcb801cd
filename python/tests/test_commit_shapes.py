"""The rows the commonest batches leave. On PostgreSQL a chain's step (a task finishes,
its successor starts) and a run's last step (its last task finishes, the run ends) are
written by plain statements rather than by `cloacina_commit`; every outcome a task can
have must leave the same rows as on SQLite, through either path."""

from __future__ import annotations

from cloacina import Runner, Skip, Workflow, rules, task
from helpers import loads


@task(id="shape_first")
def shape_first(ctx):
    ctx["n"] = 1


@task(id="shape_skips", dependencies=["shape_first"])
def shape_skips(ctx):
    ctx["half"] = True
    raise Skip("nothing to do today")


@task(id="shape_after_skip", dependencies=["shape_skips"], trigger=rules.none_failed())
def shape_after_skip(ctx):
    ctx["n"] = ctx["n"] + 1


@task(id="shape_fails", dependencies=["shape_after_skip"])
def shape_fails(ctx):
    raise ValueError("the last step broke")


SHAPES = Workflow("commit_shapes", [shape_first, shape_skips, shape_after_skip, shape_fails])


def test_steps_and_last_step_leave_every_outcome_in_the_rows(db_url, rows):
    with Runner(db_url, max_concurrency=1) as runner:
        result = runner.run(SHAPES, {"n": 0})
        (owner,) = {
            t["owner"] for t in rows("SELECT owner FROM run_tasks WHERE run_id = ?", result.run_id)
        }
    assert result.status == "failed"
    assert owner is not None
    by_id = {
        t["task_id"]: t
        for t in rows("SELECT * FROM run_tasks WHERE run_id = ? ORDER BY position", result.run_id)
    }
    first, skips, after, fails = (by_id[t.id] for t in SHAPES.tasks)
    outputs = {
        o["task_id"]: loads(o["output"])
        for o in rows("SELECT task_id, output FROM task_outputs WHERE run_id = ?", result.run_id)
    }
    # Completed tasks only: a skipped task's writes are not part of the context.
    assert outputs == {"shape_first": {"n": 1}, "shape_after_skip": {"n": 2}}
    # A task that completed, then its successor started (a step).
    assert (first["status"], first["attempts"], first["error"]) == ("completed", 1, None)
    # A task that skipped itself: its status and its reason.
    assert (skips["status"], skips["attempts"]) == ("skipped", 1)
    assert skips["reason"] == "nothing to do today"
    assert after["status"] == "completed"
    # The last task failed and the run with it (the last step).
    assert (fails["status"], fails["attempts"]) == ("failed", 1)
    assert "ValueError: the last step broke" in fails["error"]
    assert "shape_fails" in fails["traceback"]
    for t in (first, skips, after, fails):
        assert t["started_at"] <= t["finished_at"], t["task_id"]
        assert t["ready_at"] is None
    assert first["finished_at"] <= skips["started_at"]
    assert skips["finished_at"] <= after["started_at"]
    assert after["finished_at"] <= fails["started_at"]
    (run,) = rows("SELECT * FROM runs WHERE run_id = ?", result.run_id)
    assert run["status"] == "failed"
    assert "shape_fails" in run["error"]
    assert run["owner"] is None
    assert run["finished_at"] >= fails["finished_at"]
    attempts = rows(
        "SELECT task_id, attempt, status FROM task_attempts WHERE run_id = ? ORDER BY task_id",
        result.run_id,
    )
    assert [(a["task_id"], a["attempt"], a["status"]) for a in attempts] == [
        ("shape_after_skip", 1, "completed"),
        ("shape_fails", 1, "failed"),
        ("shape_first", 1, "completed"),
        ("shape_skips", 1, "skipped"),
    ]


@task(id="shape_only")
def shape_only(ctx):
    ctx["done"] = True


def test_a_one_task_run_ends_through_its_last_step(db_url, rows):
    with Runner(db_url) as runner:
        result = runner.run(Workflow("commit_shape_one", [shape_only]))
        again = runner.get_run(result.run_id)
    assert result.status == again.status == "completed"
    assert again.context["done"] is True
    (run,) = rows(
        "SELECT status, owner, error, finished_at FROM runs WHERE run_id = ?", result.run_id
    )
    assert (run["status"], run["owner"], run["error"]) == ("completed", None, None)
    assert run["finished_at"] is not None
