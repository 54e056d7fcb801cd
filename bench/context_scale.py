"""Context at scale: what a task costs as the context it could see grows.

    python bench/context_scale.py [--quick] [--reps N]

Workloads (trivial bodies, one SQLite file each, release build recommended):

- chains of 1,000 and 4,000 tasks where every task adds one key to the context: no
  value (no writes), a 100-byte value, a 1 KB value. Time per task is the whole
  ``runner.run`` (submit, every task, the final context) over the chain's length, the
  median of ``--reps`` runs, each on a fresh file;
- a fan-in: 4,000 parents each writing 1 KB into one join;
- reading one key: a chain of 1,000 tasks, each reading one key of the run's input, with
  an input of 10 keys and one of 10,000 keys, and one where the first task writes the 10
  keys the others read (its writes leave memory once its successor ran: they are read
  back from the database, once), the three runs alternating. Time per task is
  the span from the first task's start to the last one's end over 1,000: what a task
  pays, without submitting and returning the input (which costs what the input holds,
  once per run; a short chain still feels it, through the checkpoint of the stored
  input);
- memory: the 4,000-task 1 KB chain in a fresh process; the growth of its peak resident
  memory (VmHWM) over what it had after a warm-up run, while it runs and once its result
  is read, next to the size of the outputs the run stored and to the same chain without
  writes.

Targets (issue "Context at scale"): a 4,000-task chain writing 1 KB per task costs at
most 1.5x per task what the chain without writes costs; reading one key of a 10,000-key
context costs within 10% of reading one of a 10-key context; resident memory of that
chain under 2x the size of its stored outputs.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloacina import Runner, Workflow, task


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


def readers(name: str, length: int, first_writes: bool = False) -> Workflow:
    """A chain of ``length`` tasks, task i reading key k{i % 10} of the input; with
    ``first_writes``, the first task writes k0..k9 and the others read them (from task
    3 on, what the first task wrote has left memory: it is read back from the database)."""
    tasks = []
    previous = None
    for i in range(length):

        def body(ctx, i=i):
            if first_writes and i == 0:
                for k in range(10):
                    ctx[f"k{k}"] = "v" * 10
                return
            assert ctx[f"k{i % 10}"] == "v" * 10

        t = task(id=f"{name}_{i}", dependencies=[previous] if previous else [])(body)
        tasks.append(t)
        previous = t
    return Workflow(name, tasks)


def run_once(tmp: str, file: str, wf: Workflow, context: dict | None = None):
    """One run on a fresh file: (seconds, result)."""
    with Runner(f"sqlite:///{tmp}/{file}.db") as runner:
        started = time.perf_counter()
        result = runner.run(wf, context or {})
        seconds = time.perf_counter() - started
    assert result.status == "completed", result.error
    Path(f"{tmp}/{file}.db").unlink()
    return seconds, result


def task_span(result) -> float:
    """Seconds from the first task's start to the last task's end."""
    starts = [t.started_at for t in result.tasks.values()]
    ends = [t.finished_at for t in result.tasks.values()]
    return (max(ends) - min(starts)).total_seconds()


def peak_kb() -> int:
    """This process's peak resident memory (VmHWM), in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    """Sets VmHWM back to the current resident memory (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_probe(length: int, value_bytes: int | None) -> None:
    """In a fresh process: the peak memory a ``length``-task chain adds while it runs
    (polling its status only: one row) and once its result (context, tasks) is read, as JSON."""
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        wf = chain("mem", length, value_bytes)
        with Runner(f"sqlite:///{tmp}/mem.db") as runner:
            runner.run(chain("warm", 50, value_bytes), {})  # libraries, caches, threads
            reset_peak()
            before = peak_kb()
            handle = runner.start(wf, {})
            while handle.status() != "completed":
                time.sleep(0.005)
            running_kb = peak_kb() - before
            result = runner.get_run(handle.run_id)
            result_kb = peak_kb() - before
            assert result.status == "completed", result.error
            del result
        with sqlite3.connect(f"{tmp}/mem.db") as conn:
            [(stored,)] = conn.execute(
                "SELECT coalesce(sum(length(output)), 0) FROM task_outputs "
                "WHERE task_id LIKE 'mem\\_%' ESCAPE '\\'"
            ).fetchall()
    print(
        json.dumps(
            {
                "running_mb": running_kb / 1000,
                "result_mb": result_kb / 1000,
                "stored_mb": stored / 1e6,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="chains of 250 and 1,000 only")
    parser.add_argument("--reps", type=int, default=3, help="runs per chain (median)")
    parser.add_argument("--memory-probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.probe_bytes)
        return
    lengths = (250, 1000) if args.quick else (1000, 4000)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
        per_task: dict[tuple[int, str], float] = {}
        for length in lengths:
            for label, size in (("none", None), ("100 B", 100), ("1 KB", 1000)):
                wf = chain(f"c{length}_{label.replace(' ', '')}", length, size)
                times = [run_once(tmp, "chain", wf)[0] for _ in range(args.reps)]
                ms = statistics.median(times) * 1000 / length
                per_task[(length, label)] = ms
                rows.append((f"chain of {length}, {label} per key", f"{ms:.3f} ms/task"))
        # The target's ratio from runs alternating the two chains (twice as many), so that
        # the machine's drifts fall on both alike.
        big = lengths[-1]
        pair = {size: chain(f"p{big}_{size}", big, size) for size in (None, 1000)}
        paired: dict[int | None, list[float]] = {None: [], 1000: []}
        for _ in range(2 * args.reps):
            for size, wf in pair.items():
                paired[size].append(run_once(tmp, "pair", wf)[0])
        ratio = statistics.median(paired[1000]) / statistics.median(paired[None])
        rows.append(
            (
                f"chain of {big}: 1 KB vs no writes (alternated, {2 * args.reps} runs each)",
                f"{ratio:.2f}x (target <= 1.5x)",
            )
        )

        parents = 4000 if not args.quick else 1000
        wf = fan_in(f"fan{parents}", parents, 1000)
        seconds = statistics.median(run_once(tmp, "fan", wf)[0] for _ in range(args.reps))
        rows.append(
            (f"fan-in of {parents} parents x 1 KB", f"{seconds * 1000 / (parents + 1):.3f} ms/task")
        )

        # Alternating the three, so that the machine's drifts fall on all alike. Key 0:
        # the first task's writes (keys k0..k9), read back from the database.
        length = 1000
        samples: dict[int, list[float]] = {10: [], 10_000: [], 0: []}
        inputs = {keys: {f"k{i}": "v" * 10 for i in range(keys)} for keys in samples}
        workflows = {keys: readers(f"read{keys}", length, keys == 0) for keys in samples}
        for _ in range(2 * args.reps):
            for keys, spans_of in samples.items():
                result = run_once(tmp, "read", workflows[keys], inputs[keys])[1]
                spans_of.append(task_span(result))
        spans = {keys: statistics.median(s) * 1000 / length for keys, s in samples.items()}
        rows.append(("read 1 key of 10 keys", f"{spans[10]:.3f} ms/task"))
        rows.append(("read 1 key of 10,000 keys", f"{spans[10_000]:.3f} ms/task"))
        rows.append(
            ("10,000 keys vs 10 keys", f"{spans[10_000] / spans[10]:.2f}x (target <= 1.1x)")
        )
        rows.append(
            (
                "read 1 of the 10 keys the first task wrote (left memory, read back once)",
                f"{spans[0]:.3f} ms/task ({spans[0] / spans[10]:.2f}x reading the input)",
            )
        )

    memory = {}
    for size in (None, 1000):
        extra = [] if size is None else ["--probe-bytes", str(size)]
        probe = subprocess.run(
            [sys.executable, __file__, "--memory-probe", str(big), *extra],
            check=True,
            capture_output=True,
            text=True,
        )
        memory[size] = json.loads(probe.stdout)
    stored = memory[1000]["stored_mb"]
    # The target is the run's; reading its result builds 4,000 task records and the
    # whole context as Python objects, shown for what it costs.
    for when, field, target in (
        ("while it runs", "running_mb", "target < 2x"),
        ("with its result read", "result_mb", "no target: the result's objects"),
    ):
        grown, baseline = memory[1000][field], memory[None][field]
        rows.append(
            (
                f"chain of {big} x 1 KB: peak memory growth {when}",
                f"{grown:.1f} MB ({grown / stored:.2f}x its {stored:.1f} MB of stored outputs; "
                f"{baseline:.1f} MB without writes; {target})",
            )
        )
    print("| measure | result |")
    print("| --- | --- |")
    for measure, result in rows:
        print(f"| {measure} | {result} |")


if __name__ == "__main__":
    main()
