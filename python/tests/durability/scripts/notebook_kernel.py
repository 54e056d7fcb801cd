"""A stand-in for a notebook kernel: executes the cells it reads on stdin, one JSON line
each ({"cell": "<code>"}), in one shared namespace, as Jupyter does.

After each cell it prints {"ok": true, "out": <the cell's variable _out, if any>} or
{"ok": false, "error": "<traceback>"}. The tasks and workflows are therefore defined by
code that exists in no file, like a notebook's.
"""

import json
import sys
import traceback


def main() -> None:
    namespace = {"__name__": "__main__"}
    print(json.dumps({"ok": True, "out": "kernel ready"}), flush=True)
    for line in sys.stdin:
        cell = json.loads(line)["cell"]
        namespace.pop("_out", None)
        try:
            exec(compile(cell, "<cell>", "exec"), namespace)
        except BaseException:
            print(json.dumps({"ok": False, "error": traceback.format_exc()}), flush=True)
        else:
            print(json.dumps({"ok": True, "out": namespace.get("_out")}), flush=True)


if __name__ == "__main__":
    main()
