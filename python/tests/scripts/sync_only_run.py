"""Runs a workflow of sync tasks, then one with an async task, and reports whether
asyncio was loaded before the async task needed it.

Usage: sync_only_run.py DATABASE_URL
Prints ``before=<bool> after=<bool>``: whether ``asyncio`` was in ``sys.modules`` after
the sync run, and after the async one. Exit status 0 when both runs completed.
"""

import sys

from cloacina import Runner, Workflow, task


@task
def plain(ctx):
    ctx["plain"] = 1


@task(dependencies=[plain])
async def later(ctx):
    ctx["later"] = ctx["plain"] + 1


def main() -> int:
    with Runner(sys.argv[1]) as runner:
        first = runner.run(Workflow("sync_only_wf", [plain]), {})
        before = "asyncio" in sys.modules
        second = runner.run(Workflow("then_async_wf", [plain, later]), {})
        after = "asyncio" in sys.modules
    print(f"before={before} after={after}")
    ok = first.status == "completed" and second.context.get("later") == 2
    return 0 if ok else 3


if __name__ == "__main__":
    sys.exit(main())
