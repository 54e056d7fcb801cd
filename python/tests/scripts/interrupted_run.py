"""Starts a run whose task sleeps for a long time, prints READY, and waits in run().

The test sends SIGINT: the blocking wait must raise KeyboardInterrupt promptly.
"""

import signal
import sys
import time

from cloacina import Runner, Workflow, task

# Python installs its Ctrl-C handler only when SIGINT is not ignored at startup, and a
# shell that starts a job in the background (as some CI runners do) ignores it: install
# the default handler explicitly, since the test sends SIGINT.
signal.signal(signal.SIGINT, signal.default_int_handler)


@task
def sleepy(ctx):
    time.sleep(float(sys.argv[2]))


wf = Workflow("interrupted", [sleepy])
runner = Runner(sys.argv[1])
print("READY", flush=True)
try:
    runner.run(wf, {})
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(3)
print("NOT INTERRUPTED", flush=True)
