"""Asks for a run to be cancelled from another process; prints the answer as JSON.

Usage: cancel_run.py DATABASE_URL RUN_ID
"""

import json
import sys

from cloacina import Runner


def main() -> None:
    url, run_id = sys.argv[1], sys.argv[2]
    with Runner(url) as runner:
        cancelled = runner.cancel(run_id)
        again = runner.cancel("no-such-run")
    print(json.dumps({"cancelled": cancelled, "unknown": again}))


if __name__ == "__main__":
    main()
