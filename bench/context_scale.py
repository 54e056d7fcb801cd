"""Context at scale: what a task costs as the context it could see grows.

    python bench/context_scale.py [--quick]

Workloads (trivial bodies, one SQLite file each, release build recommended):

- chains of 1,000 and 4,000 tasks where every task adds one key to the context: no
  value (no writes), a 100-byte value, a 1 KB value;
- a fan-in: 4,000 parents each writing 1 KB into one join;
- a task that reads one key of a 10,000-key context, next to one that reads one key of
  a 10-key context.

Targets (issue "Context at scale"): a 4,000-task chain writing 1 KB per task costs at
most 1.5x per task what the chain without writes costs; reading one key of a 10,000-key
context costs within 10% of reading one of a 10-key context; resident memory of that
chain under 2x the size of its stored outputs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cloacina import Runner, Workflow, task


def rss_mb() -> float:
    """Resident memory of this process, in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def chain(name: str, length: int, value_bytes: int | None) -> Workflow:
    """A chain where task i writes key k{i} (a value of ``value_bytes``, or nothing)."""
    tasks = []
    previous = None
    value = None if value_bytes is None else "x" * value_bytes
    for i in range(length):

        def body(ctx, i=i):
            if value is not None:
                ctx[f"k{i}"] = value

        t = task(id=f"{name}_{i}", dependencies=[previous] if previous else [])(body)
        tasks.append(t)
        previous = t
    return Workflow(name, tasks)


def fan_in(name: str, parents: int, value_bytes: int) -> Workflow:
    """``parents`` independent tasks each writing ``value_bytes``, joined by one task."""
    value = "x" * value_bytes
    ups = []
    for i in range(parents):

        def body(ctx, i=i):
            ctx[f"p{i}"] = value

        ups.append(task(id=f"{name}_{i}")(body))

    @task(id=f"{name}_join", dependencies=ups)
    def join(ctx):
        return {"n": len(ctx)}

    return Workflow(name, [join])


def reader(name: str, keys: int) -> Workflow:
    """A task that reads one key of a context of ``keys`` keys (given as the input)."""

    @task(id=f"{name}_read")
    def read_one(ctx):
        return {"got": len(ctx["k0"])}

    return Workflow(name, [read_one])


def timed(runner: Runner, wf: Workflow, context: dict | None = None, reps: int = 1) -> float:
    """Median seconds of ``reps`` runs."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        result = runner.run(wf, context or {})
        times.append(time.perf_counter() - started)
        assert result.status == "completed", result.error
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="chains of 250 and 1,000 only")
    args = parser.parse_args()
    lengths = (250, 1000) if args.quick else (1000, 4000)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        per_task: dict[tuple[int, str], float] = {}
        for length in lengths:
            for label, size in (("none", None), ("100 B", 100), ("1 KB", 1000)):
                wf = chain(f"c{length}_{label.replace(' ', '')}", length, size)
                with Runner(f"sqlite:///{tmp}/c{length}_{size}.db") as runner:
                    before = rss_mb()
                    seconds = timed(runner, wf)
                    growth = rss_mb() - before
                ms = seconds * 1000 / length
                per_task[(length, label)] = ms
                rows.append(
                    (f"chain of {length}, {label} per key", f"{ms:.3f} ms/task, +{growth:.0f} MB")
                )
        big = lengths[-1]
        ratio = per_task[(big, "1 KB")] / per_task[(big, "none")]
        rows.append((f"chain of {big}: 1 KB vs no writes", f"{ratio:.2f}x (target <= 1.5x)"))
        parents = 4000 if not args.quick else 1000
        with Runner(f"sqlite:///{tmp}/fan.db") as runner:
            seconds = timed(runner, fan_in(f"fan{parents}", parents, 1000))
        rows.append(
            (f"fan-in of {parents} parents x 1 KB", f"{seconds * 1000 / (parents + 1):.3f} ms/task")
        )
        with Runner(f"sqlite:///{tmp}/read.db") as runner:
            small = timed(runner, reader("r10", 10), {f"k{i}": "v" * 10 for i in range(10)}, 21)
            large = timed(
                runner, reader("r10000", 10_000), {f"k{i}": "v" * 10 for i in range(10_000)}, 21
            )
        rows.append(("read 1 key of 10 keys", f"{small * 1000:.3f} ms per run"))
        rows.append(("read 1 key of 10,000 keys", f"{large * 1000:.3f} ms per run"))
        rows.append(("10,000 keys vs 10 keys", f"{large / small:.2f}x (target <= 1.1x)"))
    print("| measure | result |")
    print("| --- | --- |")
    for measure, result in rows:
        print(f"| {measure} | {result} |")


if __name__ == "__main__":
    main()
