"""Reads one run (and the run list) from a cloacina database; prints it as JSON.

Usage: read_run.py DATABASE_URL RUN_ID

The workflow is not defined in this process: everything comes from the database file.
"""

import json
import sys

from cloacina import Runner


def main() -> None:
    url, run_id = sys.argv[1], sys.argv[2]
    with Runner(url) as runner:
        result = runner.get_run(run_id)
        listed = runner.list_runs()
        out = {"found": result is not None, "listed": [r.run_id for r in listed]}
        if result is not None:
            out.update(
                run_id=result.run_id,
                workflow=result.workflow,
                status=result.status,
                context=result.context,
                error=result.error,
                tasks={
                    tid: {"status": t.status, "attempts": t.attempts, "error": t.error}
                    for tid, t in result.tasks.items()
                },
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
