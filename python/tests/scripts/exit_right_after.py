"""Runs short workflows (sync and async tasks, hooks) and exits the moment the last run
is final, so that interpreter shutdown races the engine's threads finishing their work.

Usage: exit_right_after.py DATABASE_URL close|atexit
With ``close`` the runner is closed explicitly; with ``atexit`` it is left open for the
interpreter's exit to close. Exit status 0 when every run completed; a thread of the
engine still inside Python when the interpreter finalizes makes CPython abort instead.
"""

import sys

from cloacina import Runner, Workflow, task

seen = []


@task(on_success=lambda *args: seen.append(1))
def first(ctx):
    ctx["n"] = 1


@task(dependencies=[first], on_success=lambda *args: seen.append(2))
def second(ctx):
    ctx["n"] = ctx["n"] + 1


@task(dependencies=[second])
async def third(ctx):
    ctx["n"] = ctx["n"] + 1


def main() -> int:
    # Switch threads as often as possible: a thread that lost the GIL in the middle of
    # its work must take it back, which is what must not happen during shutdown.
    sys.setswitchinterval(1e-6)
    wf = Workflow("exit_right_after_wf", [first, second, third])
    runner = Runner(sys.argv[1], max_concurrency=4)
    handles = [runner.start(wf, {}) for _ in range(10)]
    ok = all(h.wait(timeout=60).context.get("n") == 3 for h in handles)
    # The last run ends with an async task: its thread's tail, after handing the
    # coroutine to the loop, races the run's end and the exit below.
    ok = ok and runner.run(wf, {}).context.get("n") == 3
    if sys.argv[2] == "close":
        runner.close()
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
