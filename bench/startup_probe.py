"""Startup cost in a fresh interpreter: import the engine, open it on a new database file.

    python bench/startup_probe.py cloacina /abs/new.db [normal|full]
    python bench/startup_probe.py dbos /abs/new.sqlite

Nothing but sys and time is imported before the clock starts, so the engine's import
pays for everything it pulls in (sqlite3, asyncio, ...), as it would in a user's program.
Prints one line: PROBE {"import_s": ..., "open_s": ..., "total_s": ...}.
"""

import sys
import time


def cloacina_probe(db: str, durability: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    import cloacina

    t1 = time.perf_counter()
    kwargs = {} if durability == "normal" else {"durability": durability}
    runner = cloacina.Runner(f"sqlite:///{db}", **kwargs)
    t2 = time.perf_counter()
    runner.close()
    return t0, t1, t2


def dbos_probe(db: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    from dbos import DBOS

    t1 = time.perf_counter()
    DBOS(
        config={
            "name": "cloacina-bench-startup",
            "system_database_url": f"sqlite:///{db}",
            "log_level": "WARNING",
        }
    )
    DBOS.launch()
    t2 = time.perf_counter()
    DBOS.destroy()
    return t0, t1, t2


def main() -> None:
    engine, db = sys.argv[1], sys.argv[2]
    if engine == "cloacina":
        t0, t1, t2 = cloacina_probe(db, sys.argv[3] if len(sys.argv) > 3 else "normal")
    elif engine == "dbos":
        t0, t1, t2 = dbos_probe(db)
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    import json
    import os

    if not os.path.exists(db):
        raise SystemExit(f"{engine} did not create the database file {db}")
    print(
        "PROBE " + json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "total_s": t2 - t0}),
        flush=True,
    )


if __name__ == "__main__":
    main()
