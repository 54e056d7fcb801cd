"""Defines a small workflow, runs it once and prints what happened as JSON.

Usage: run_workflow.py DATABASE_URL INPUT_JSON
"""

import json
import sys

from cloacina import Runner, Workflow, task


@task
def base(ctx):
    ctx["base"] = ctx["n"] + 1


@task(dependencies=[base])
def double(ctx):
    return {"double": ctx["base"] * 2}


@task(dependencies=[double])
async def describe(ctx):
    return f"{ctx['n']} -> {ctx['double']}"


WORKFLOW = Workflow("subprocess_wf", [base, double, describe], description="from a child")


def main() -> None:
    url, payload = sys.argv[1], json.loads(sys.argv[2])
    with Runner(url) as runner:
        result = runner.run(WORKFLOW, payload)
    print(
        json.dumps(
            {
                "run_id": result.run_id,
                "status": result.status,
                "context": result.context,
                "version": WORKFLOW.version,
                "order": WORKFLOW.topological_order(),
            }
        )
    )


if __name__ == "__main__":
    main()
