"""Starts a run with a long async task, prints its id, waits for it, prints how it ended.

Usage: cancellable_run.py DATABASE_URL SECONDS

The test cancels the run from its own process; this process owns the run and must carry
the cancellation out.
"""

import asyncio
import json
import sys

from cloacina import Runner, Workflow, task


@task(id="owned_first")
def owned_first(ctx):
    return {"first": True}


@task(id="owned_long", dependencies=[owned_first])
async def owned_long(ctx):
    await asyncio.sleep(float(sys.argv[2]))
    return {"long": True}


@task(id="owned_after", dependencies=[owned_long])
def owned_after(ctx):
    return {"after": True}


def main() -> None:
    with Runner(sys.argv[1]) as runner:
        handle = runner.start(Workflow("owned_wf", [owned_after]), {})
        print("RUN", handle.run_id, flush=True)
        result = handle.wait(timeout=120)
    print(
        json.dumps(
            {
                "status": result.status,
                "context": result.context,
                "tasks": {tid: t.status for tid, t in result.tasks.items()},
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
