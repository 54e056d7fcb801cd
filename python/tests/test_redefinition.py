"""One source of truth for a task: a workflow is its name and the ids it lists, and
every run, resume and recovery uses each task's current definition (as a notebook that
re-runs one cell expects)."""

from __future__ import annotations

import pytest
from cloacina import Fail, Workflow, WorkflowError, task


def test_a_redefined_task_runs_with_its_new_code_and_edges(runner):
    @task
    def a(ctx):
        return {"x": 1}

    @task
    def b(ctx):
        return {"y": 2}

    @task(dependencies=[a])
    def c(ctx):
        return {"z": ctx["x"]}

    wf = Workflow("redefine_wf", [a, b, c])
    first = runner.run(wf)
    assert first.status == "completed" and first.context["z"] == 1
    v1 = wf.version
    assert runner.get_run(first.run_id).version == v1

    @task(dependencies=[a, b])  # the user edits and re-runs only c's cell
    def c(ctx):
        return {"z": ctx["x"] + ctx["y"]}

    second = runner.run(wf)
    assert second.status == "completed", second.error
    assert second.context["z"] == 3
    assert wf.version != v1
    assert second.version == wf.version
    assert wf.topological_order() == ["a", "b", "c"]
    assert [t.id for t in wf.tasks] == ["a", "b", "c"] and wf.tasks[2] is c


def test_an_option_change_changes_the_version(runner):
    @task(id="opt_task")
    def opt_task(ctx):
        return None

    wf = Workflow("options_wf", [opt_task])
    v1 = wf.version

    @task(id="opt_task", retries=3)
    def opt_task_again(ctx):
        return None

    assert wf.version != v1


def test_an_edit_that_breaks_the_workflow_fails_the_next_run_naming_it(runner):
    @task(id="p")
    def p(ctx):
        return None

    @task(id="q", dependencies=[p])
    def q(ctx):
        return None

    wf = Workflow("broken_wf", [p, q])
    assert runner.run(wf).status == "completed"

    @task(id="q", dependencies=["nope"])
    def q_unknown(ctx):
        return None

    with pytest.raises(WorkflowError, match=r"'q'.*'nope'"):
        runner.run(wf)

    @task(id="p", dependencies=["q"])
    def p_cycle(ctx):
        return None

    @task(id="q", dependencies=["p"])
    def q_cycle(ctx):
        return None

    with pytest.raises(WorkflowError, match="cycle"):
        runner.start(wf)


def test_a_renamed_task_is_not_pulled_back_in_through_a_stale_object(runner):
    @task(id="old_name")
    def old_name(ctx):
        return {"who": "old"}

    @task(id="consumer", dependencies=[old_name])
    def consumer(ctx):
        return {"saw": ctx["who"]}

    wf = Workflow("rename_wf", [consumer])
    assert wf.topological_order() == ["consumer", "old_name"] or set(wf.topological_order()) == {
        "consumer",
        "old_name",
    }

    @task(id="new_name")
    def new_name(ctx):
        return {"who": "new"}

    @task(id="consumer", dependencies=[new_name])
    def consumer_again(ctx):
        return {"saw": ctx["who"]}

    result = runner.run(wf)
    assert result.status == "completed", result.error
    assert set(result.tasks) == {"new_name", "consumer"}
    assert result.context["saw"] == "new"


def test_resume_replans_a_run_on_the_current_definition(runner):
    @task(id="keep")
    def keep(ctx):
        return {"kept": True}

    @task(id="dropped", dependencies=[keep])
    def dropped(ctx):
        raise Fail("broken step")

    @task(id="last", dependencies=[dropped])
    def last(ctx):
        return {"last": True}

    wf = Workflow("replan_wf", [keep, dropped, last])
    first = runner.run(wf)
    assert first.status == "failed"
    assert first.tasks["last"].status == "upstream_failed"

    # The fix: "dropped" is replaced by "fixed"; "last" now depends on it.
    @task(id="fixed", dependencies=[keep])
    def fixed(ctx):
        return {"fixed": True}

    @task(id="last", dependencies=[fixed])
    def last_again(ctx):
        return {"last": ctx["fixed"]}

    Workflow("replan_wf", [keep, fixed, last_again])
    again = runner.resume(first.run_id).wait(timeout=30)
    assert again.status == "completed", again.error
    status = {tid: t.status for tid, t in again.tasks.items()}
    assert status == {
        "keep": "completed",
        "fixed": "completed",
        "last": "completed",
        "dropped": "skipped",  # no longer part of the plan
    }
    assert "no longer in workflow" in again.tasks["dropped"].reason
    assert [a.status for a in again.tasks["dropped"].history] == ["failed"]
    assert again.tasks["keep"].attempts == 1, "a completed task never runs again"
    assert again.context == {"kept": True, "fixed": True, "last": True}
    [event] = [e for e in again.events if e["kind"] == "version_mismatch"]
    assert event["detail"]["added_tasks"] == ["fixed"]
    assert event["detail"]["removed_tasks"] == ["dropped"]
    assert again.version == Workflow("replan_wf", [keep, fixed, last_again]).version


def test_a_removed_task_that_completed_does_not_override_the_current_tasks(runner):
    @task(id="gone_writer")
    def gone_writer(ctx):
        return {"x": "old"}

    @task(id="breaks", dependencies=[gone_writer])
    def breaks(ctx):
        raise Fail("not yet")

    first = runner.run(Workflow("override_wf", [gone_writer, breaks]))
    assert first.status == "failed"

    @task(id="new_writer")
    def new_writer(ctx):
        return {"x": "new"}

    @task(id="breaks", dependencies=[new_writer])
    def breaks_fixed(ctx):
        return {"y": ctx["x"]}

    Workflow("override_wf", [new_writer, breaks_fixed])
    again = runner.resume(first.run_id).wait(timeout=30)
    assert again.status == "completed", again.error
    assert again.tasks["gone_writer"].status == "completed"
    assert again.context == {"x": "new", "y": "new"}
