"""A first durable workflow: extract -> transform -> load, recorded in ./quickstart.db.

Run it twice: every run is kept in the database, and the second run lists both.
"""

import asyncio

from cloacina import Context, Runner, Workflow, task


@task
def extract(ctx: Context) -> None:
    # Writes into the context are persisted as this task's output.
    ctx["rows"] = [3, 1, 4, 1, 5, 9, 2, 6]


@task(dependencies=[extract])
def transform(ctx: Context) -> dict:
    # A returned dict is merged into the context.
    rows = ctx["rows"]
    return {"total": sum(rows), "largest": max(rows)}


@task(dependencies=[transform])
async def load(ctx: Context) -> str:
    # async def works the same way; any other return value is stored under the task id.
    await asyncio.sleep(0.01)
    return f"loaded {ctx['total']} from {ctx['source']}"


workflow = Workflow("quickstart", [extract, transform, load], description="A first ETL")

if __name__ == "__main__":
    with Runner("sqlite:///quickstart.db") as runner:
        result = runner.run(workflow, {"source": "numbers.csv"})
        result.raise_for_status()
        print(f"run {result.run_id}: {result.status} in {result.duration}")
        for task_id, task_result in result.tasks.items():
            print(f"  {task_id:10s} {task_result.status:10s} {task_result.duration}")
        print("context:", result.context)
        print("runs recorded so far:", len(runner.list_runs(workflow="quickstart", limit=1000)))
