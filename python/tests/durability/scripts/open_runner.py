"""Opens a Runner on a database and closes it; prints {"ok", "seconds", "error"} as JSON.

Usage: open_runner.py DATABASE_URL
"""

import json
import sys
import time

from cloacina import Runner


def main() -> None:
    began = time.monotonic()
    try:
        Runner(sys.argv[1]).close()
    except Exception as exc:
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        out = {"ok": True, "error": None}
    out["seconds"] = time.monotonic() - began
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
