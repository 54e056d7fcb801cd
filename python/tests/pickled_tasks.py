"""A task and a workflow at the top level of an importable module, for the pickling tests
of test_hardening_py.py: both pickle by reference, so a worker process finds them here."""

from __future__ import annotations

from cloacina import Runner, Workflow, task


@task(id="pickled_double")
def double(ctx):
    return {"y": ctx["x"] * 2}


WORKFLOW = Workflow("pickled_wf", [double])


def run_workflow(url: str, workflow: Workflow, data: dict) -> tuple:
    """Runs in a worker process: runs the (unpickled) workflow on the database at ``url``."""
    with Runner(url) as runner:
        result = runner.run(workflow, data)
    return result.run_id, result.status, result.context, workflow is WORKFLOW
