"""Small helpers shared by the harness and its workload subprocesses (stdlib only).

Every workload, whatever the engine, is reported in the same shape::

    {
      "tasks": 100,            # tasks executed per repetition (the per-task denominator)
      "runs": 1,               # workflow runs per repetition
      "reps": [                # one entry per timed repetition
        {"seconds": 0.12, "ok": true, "problems": [], "rows": {...}}
      ],
      "median_s": 0.12, "min_s": ..., "max_s": ...,
      "per_task_ms": 1.2,      # 1000 * median_s / tasks
      "tasks_per_s": 833.0,    # tasks / median_s
      "valid": true,           # every repetition ran, returned the right result and
                               # left the right rows in the database
      "error": null            # the exception, if the workload could not finish
    }

A repetition whose rows did not persist is kept in "reps" (for diagnosis) but makes the
workload invalid: the harness prints INVALID instead of its numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import traceback
from typing import Any


def log(msg: str) -> None:
    """Progress output: stderr, so a subprocess's stdout stays free."""
    print(msg, file=sys.stderr, flush=True)


def rep_record(seconds: float, problems: list[str], rows: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": seconds, "ok": not problems, "problems": problems, "rows": rows}


def summarize(
    tasks: int,
    runs: int,
    reps: list[dict[str, Any]],
    wanted_reps: int,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Medians and validity of one workload's repetitions."""
    times = [r["seconds"] for r in reps]
    med = statistics.median(times) if times else None
    valid = error is None and len(reps) >= wanted_reps and all(r["ok"] for r in reps)
    out: dict[str, Any] = {
        "tasks": tasks,
        "runs": runs,
        "reps": reps,
        "median_s": med,
        "min_s": min(times) if times else None,
        "max_s": max(times) if times else None,
        "per_task_ms": (1000.0 * med / tasks) if med else None,
        "tasks_per_s": (tasks / med) if med else None,
        "valid": valid,
        "error": error,
    }
    out.update(extra)
    return out


def describe_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def write_json(path: str, data: Any) -> None:
    """Atomic write, so a killed subprocess leaves the last complete state behind."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for everyone to read
    os.replace(tmp, path)


def rep_line(name: str, rep: int, rec: dict[str, Any], result: Any = None) -> str:
    rows = " ".join(f"{k}={v}" for k, v in rec["rows"].items())
    status = "ok" if rec["ok"] else "BAD: " + "; ".join(rec["problems"])
    res = f" result={result}" if result is not None else ""
    return f"  {name:24s} rep{rep} {rec['seconds']:9.4f}s{res} {rows} [{status}]"


def rss_bytes() -> int:
    """This process's resident memory now (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
    """Samples the process's resident memory in a background thread and keeps the peak.

    Use as a context manager around the code measured; ``peak`` is the highest sample
    (taken every ``interval`` seconds, and once at the start and at the end).
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
