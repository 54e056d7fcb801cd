"""Turns logging on at DEBUG, then defines, redefines and runs workflows (one run fails).

Usage: logged_run.py DATABASE_URL
Every log record goes to stderr as "LOG|<logger name>|<level>|<message>".
"""

import logging
import sys

from cloacina import Runner, Workflow, task


def main() -> int:
    logging.basicConfig(
        level=logging.DEBUG, stream=sys.stderr, format="LOG|%(name)s|%(levelname)s|%(message)s"
    )

    @task(id="logged_step")
    def step_v1(ctx):
        ctx["v"] = 1

    @task(id="logged_step")  # a redefinition, as a notebook re-running a cell
    def step_v2(ctx):
        ctx["v"] = 2

    @task(id="logged_fail", dependencies=["logged_step"])
    def fail(ctx):
        raise RuntimeError("logged failure")

    with Runner(sys.argv[1]) as runner:
        ok = runner.run(Workflow("logged_ok", [step_v2]), {})
        bad = runner.run(Workflow("logged_bad", [step_v2, fail]), {})
    return 0 if (ok.status, bad.status) == ("completed", "failed") else 3


if __name__ == "__main__":
    sys.exit(main())
