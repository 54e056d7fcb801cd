"""Runs a workflow with a blocking run(); its first task prints the run id, the second one
sleeps for a long time. The test sends SIGINT: run() must cancel the run, then raise
KeyboardInterrupt.

Usage: ctrl_c_run.py DATABASE_URL SECONDS
"""

import asyncio
import signal
import sys

from cloacina import Runner, Workflow, task

# Python installs its Ctrl-C handler only when SIGINT is not ignored at startup, and a
# shell that starts a job in the background (as some CI runners do) ignores it: install
# the default handler explicitly, since the test sends SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)

runner = Runner(sys.argv[1])


@task(id="announce")
def announce(ctx):
    # The database is fresh: the only run is this one.
    [run] = runner.list_runs(limit=2)
    print("RUN", run.run_id, flush=True)
    return {"announced": True}


@task(id="long_sleep", dependencies=[announce])
async def long_sleep(ctx):
    await asyncio.sleep(float(sys.argv[2]))
    return {"slept": True}


try:
    runner.run(Workflow("ctrl_c_wf", [long_sleep]), {})
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    runner.close()
    sys.exit(3)
print("NOT INTERRUPTED", flush=True)
