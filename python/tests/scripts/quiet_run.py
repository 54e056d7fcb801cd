"""Runs a successful workflow (sync and async tasks) and prints nothing of its own.

Usage: quiet_run.py DATABASE_URL
Exit status 0 when the run completed, 3 otherwise. Logging is not configured, so anything
the engine emits at WARNING or above would reach stderr through logging's last resort.
"""

import asyncio
import sys

from cloacina import Runner, Workflow, task


@task
def first(ctx):
    ctx["first"] = 1


@task(dependencies=[first])
async def second(ctx):
    await asyncio.sleep(0.01)
    return {"second": ctx["first"] + 1}


def main() -> int:
    wf = Workflow("quiet_wf", [first, second])
    with Runner(sys.argv[1], max_concurrency=2) as runner:
        result = runner.run(wf, {})
        handle = runner.start(wf, {})
        started = handle.wait(timeout=60)
    ok = result.status == "completed" and started.status == "completed"
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
