#!/usr/bin/env python3
"""cloacina benchmark harness: cloacina (both durability modes), DBOS Transact and raw
SQLite commits, measured side by side in one invocation. See bench/README.md.

    python bench/run.py                  # everything, default sizes
    python bench/run.py --quick          # small sizes, a smoke test of the harness
    python bench/run.py --scale          # also W1 x2000, W2 x10000, context_scale.py
    python bench/run.py --only dbos,raw  # a subset

Each engine runs in its own subprocess (DBOS keeps process-global state; a crash or hang
of one engine must not lose the others' numbers) and reports JSON back. Startup is
measured in fresh interpreters. Prints one table and writes bench/results/latest.json
plus a timestamped copy. Exit status: 0 when everything asked for ran and every
repetition's rows persisted, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
import benchlib  # noqa: E402
import raw_sqlite  # noqa: E402

TARGETS = ("cloacina", "dbos", "raw")
CLOACINA_MODES = ("normal", "full")
# mode of the raw commit that each column is compared with
SAME_MODE = {"normal": "WAL+NORMAL", "full": "WAL+FULL"}

SIZES = {  # default, --quick
    "chain": (100, 20),
    "fan": (200, 40),
    "runs": (200, 20),
    "concurrent": (100, 20),
    "reps": (3, 3),
    "cloacina_reps": (9, 3),
    "startup_reps": (5, 3),
    "raw_n": (3000, 500),
    "old_runs": (100_000, 5_000),
}
WORKLOADS = ("W1", "W2", "W3", "W4", "W5")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--chain", type=int, help="W1: tasks in the chain (100)")
    ap.add_argument("--fan", type=int, help="W2/W5: independent middle tasks (200)")
    ap.add_argument("--runs", type=int, help="W3: sequential runs of a 3-task chain (200)")
    ap.add_argument("--concurrent", type=int, help="W4: concurrent runs of a 5-task chain (100)")
    ap.add_argument("--reps", type=int, help="timed repetitions per workload, >= 3 (3)")
    ap.add_argument(
        "--cloacina-reps",
        type=int,
        help="timed repetitions of each cloacina workload, >= 3 (9): its repetitions last "
        "milliseconds, so one hiccup of the machine moves a median of 3",
    )
    ap.add_argument("--startup-reps", type=int, help="fresh-interpreter startup samples (5)")
    ap.add_argument("--raw-n", type=int, help="commits per raw SQLite repetition (3000)")
    ap.add_argument(
        "--old-runs",
        type=int,
        help="cloacina W4old: W4 on a file already holding this many runs; 0 skips (100000)",
    )
    ap.add_argument(
        "--only",
        default=",".join(TARGETS),
        help="comma-separated subset of cloacina,dbos,raw (all)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (chain 20, fan 40, runs 20, concurrent 20): a smoke test",
    )
    ap.add_argument(
        "--scale",
        action="store_true",
        help="also run W1 with --scale-chain and W2 with --scale-fan tasks",
    )
    ap.add_argument("--scale-chain", type=int, default=2000)
    ap.add_argument("--scale-fan", type=int, default=10000)
    ap.add_argument(
        "--modes",
        default=",".join(CLOACINA_MODES),
        help="cloacina durability modes to measure (normal,full)",
    )
    ap.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help="cloacina Runner(max_concurrency=...); default: the Runner's default",
    )
    ap.add_argument(
        "--dbos-variants",
        default="seq,async,child",
        help="DBOS W2 variants; the fastest is reported (seq,async,child)",
    )
    ap.add_argument(
        "--dbos-scale-variants",
        default="seq,async",
        help="DBOS W2 variants at --scale size (seq,async)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds before an engine subprocess is killed (1800; 5400 with --scale)",
    )
    ap.add_argument(
        "--workdir",
        default=str(BENCH / ".work"),
        help="where the database files go (same disk for all); default bench/.work",
    )
    ap.add_argument("--results-dir", default=str(BENCH / "results"))
    ap.add_argument("--keep-work", action="store_true", help="keep the database files")
    a = ap.parse_args()
    for key, (default, quick) in SIZES.items():
        if getattr(a, key) is None:
            setattr(a, key, quick if a.quick else default)
    if a.timeout is None:
        a.timeout = 5400.0 if a.scale else 1800.0
    if a.reps < 3 or a.cloacina_reps < 3:
        ap.error("--reps must be at least 3 (every number is a median of >= 3 repetitions)")
    a.targets = [t.strip() for t in a.only.split(",") if t.strip()]
    for t in a.targets:
        if t not in TARGETS:
            ap.error(f"--only: unknown {t!r}; choose from {', '.join(TARGETS)}")
    a.mode_list = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in a.mode_list:
        if m not in CLOACINA_MODES:
            ap.error(f"--modes: unknown {m!r}")
    return a


# ---------------------------------------------------------------------------------------
# Running the pieces


def run_engine(label: str, cmd: list[str], out: Path, timeout: float) -> dict[str, Any]:
    """Runs one engine subprocess; returns its JSON (whatever it had written) plus how it ended."""
    benchlib.log(f"== {label}: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    ended = "ok"
    try:
        proc = subprocess.run(cmd, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            ended = f"exit code {proc.returncode}"
    except subprocess.TimeoutExpired:
        ended = f"killed after the {timeout:g}s timeout"
    data: dict[str, Any] = {}
    if out.exists():
        data = json.loads(out.read_text())
    data["process"] = {"ended": ended, "wall_s": time.perf_counter() - t0}
    if ended != "ok":
        benchlib.log(f"   {label}: {ended}")
    return data


def startup(engine: str, extra: list[str], n: int, directory: Path) -> dict[str, Any]:
    """Median over n fresh interpreters of import + open on a new database file."""
    directory.mkdir(parents=True, exist_ok=True)
    samples, errors = [], []
    tag = "-".join([engine, *extra])
    for i in range(n):
        db = directory / f"{tag}-{i}.db"
        cmd = [sys.executable, str(BENCH / "startup_probe.py"), engine, str(db), *extra]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(
                cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            errors.append("probe timed out")
            continue
        wall = time.perf_counter() - t0
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("PROBE ")), None)
        if p.returncode != 0 or line is None:
            errors.append((p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1])
            continue
        s = json.loads(line[len("PROBE ") :])
        s["wall_s"] = wall
        samples.append(s)
    out: dict[str, Any] = {
        "samples": samples,
        "errors": errors,
        "valid": not errors and bool(samples),
    }
    for k in ("total_s", "import_s", "open_s", "wall_s"):
        if samples:
            out[k.replace("_s", "_ms")] = 1000 * statistics.median(s[k] for s in samples)
    ms = out.get("total_ms")
    benchlib.log(
        f"   startup {tag}: {f'{ms:.1f} ms' if ms else 'n/a'} "
        f"(import {out.get('import_ms', 0):.1f} + open {out.get('open_ms', 0):.1f}; "
        f"fresh-interpreter wall {out.get('wall_ms', 0):.1f}) {errors or ''}"
    )
    return out


def busy_warning(loadavg: tuple[float, float, float]) -> str | None:
    """The numbers are only comparable on an otherwise idle machine."""
    cpus = os.cpu_count() or 1
    if loadavg[0] > 0.5 * cpus:
        return (
            f"the machine is busy (1-minute load average {loadavg[0]:.1f} on {cpus} CPUs): "
            "other work skews these numbers, the fsync-bound ones most"
        )
    return None


def git_commit() -> str | None:
    try:
        p = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return p.stdout.strip() or None if p.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------
# The table


def wl(
    results: dict[str, Any], engine: str, mode: str | None, key: str, section: str = "workloads"
) -> dict[str, Any] | None:
    side = results.get(engine) or {}
    if mode is not None:
        side = side.get(mode) or {}
    return (side.get(section) or {}).get(key)


def good(w: dict[str, Any] | None) -> bool:
    return bool(w) and w.get("valid") and w.get("per_task_ms") is not None


def cell(w: dict[str, Any] | None, field: str = "per_task_ms", fmt: str = "{:.3f}") -> str:
    if not w:
        return "n/a"
    if w.get("error"):
        return "ERROR"
    if not w.get("valid"):
        return "INVALID"
    return fmt.format(w[field])


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}x" if a and b else "n/a"


def build_summary(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for key in WORKLOADS:
        c_n = wl(results, "cloacina", "normal", key)
        c_f = wl(results, "cloacina", "full", key)
        d = wl(results, "dbos", None, key)
        label = next((w["label"] for w in (c_n, c_f, d) if w and w.get("label")), "")
        if key in ("W2", "W5") and d:
            label = label.split(",")[0].split(" (")[0]
        dcell = cell(d)
        if d and good(d) and d.get("variant"):
            dcell += f" [{d['variant']}]"
        vals = {
            k: (w["per_task_ms"] if good(w) else None)
            for k, w in (("cloacina", c_n), ("cloacina_full", c_f), ("dbos", d))
        }
        summary[key] = {
            "label": label,
            **{f"{k}_ms_per_task": v for k, v in vals.items()},
            "speedup_normal": (vals["dbos"] / vals["cloacina"])
            if vals["dbos"] and vals["cloacina"]
            else None,
            "speedup_full": (vals["dbos"] / vals["cloacina_full"])
            if vals["dbos"] and vals["cloacina_full"]
            else None,
            "dbos_variant": (d or {}).get("variant"),
        }
        rows.append(
            [
                f"{key} {label}",
                cell(c_n),
                cell(c_f),
                dcell,
                f"{ratio(vals['dbos'], vals['cloacina'])}, "
                f"{ratio(vals['dbos'], vals['cloacina_full'])}",
            ]
        )

    # W1 per task vs one raw commit in the same mode
    raw = (results.get("raw") or {}).get("modes") or {}
    dbos_mode = (results.get("dbos") or {}).get("sqlite_mode")
    parts, rsum = [], {}
    for col, w, mode in (
        ("cloacina", wl(results, "cloacina", "normal", "W1"), "WAL+NORMAL"),
        ("cloacina_full", wl(results, "cloacina", "full", "W1"), "WAL+FULL"),
        ("dbos", wl(results, "dbos", None, "W1"), dbos_mode),
    ):
        r = raw.get(mode) if mode else None
        if good(w) and r and r.get("valid"):
            x = w["per_task_ms"] / r["ms_per_commit"]
            parts.append(f"{x:.2f} (/{mode} {r['us_per_commit']:.0f}us)")
            rsum[col] = {"ratio": x, "raw_mode": mode, "raw_us_per_commit": r["us_per_commit"]}
        else:
            parts.append("n/a")
            rsum[col] = None
    summary["W1_per_task_over_raw_commit"] = rsum
    rows.append(["W1 per-task / raw commit (same mode)", *parts, ""])

    # W4 throughput
    c_n, c_f, d = (
        wl(results, "cloacina", "normal", "W4"),
        wl(results, "cloacina", "full", "W4"),
        wl(results, "dbos", None, "W4"),
    )
    t = {
        k: (w["tasks_per_s"] if good(w) else None)
        for k, w in (("cloacina", c_n), ("cloacina_full", c_f), ("dbos", d))
    }
    summary["W4_tasks_per_s"] = t
    rows.append(
        [
            "W4 tasks/s",
            cell(c_n, "tasks_per_s", "{:.0f}"),
            cell(c_f, "tasks_per_s", "{:.0f}"),
            cell(d, "tasks_per_s", "{:.0f}"),
            f"{ratio(t['cloacina'], t['dbos'])}, {ratio(t['cloacina_full'], t['dbos'])}",
        ]
    )

    # startup
    st = results.get("startup") or {}

    def sms(k: str) -> float | None:
        s = st.get(k)
        return s["total_ms"] if s and s.get("valid") else None

    def scell(k: str) -> str:
        s = st.get(k)
        if not s:
            return "n/a"
        return f"{s['total_ms']:.1f}" if s.get("valid") else "ERROR"

    summary["startup_ms"] = {
        "cloacina": sms("cloacina_normal"),
        "cloacina_full": sms("cloacina_full"),
        "dbos": sms("dbos"),
    }
    rows.append(
        [
            "startup ms (import + open new db)",
            scell("cloacina_normal"),
            scell("cloacina_full"),
            scell("dbos"),
            f"{ratio(sms('dbos'), sms('cloacina_normal'))}, "
            f"{ratio(sms('dbos'), sms('cloacina_full'))}",
        ]
    )
    return rows, summary


def scale_rows(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    rows, summary = [], {}
    for key in ("W1", "W2"):
        cols, ssum = [], {}
        size_label = ""
        for col, engine, mode in (
            ("cloacina", "cloacina", "normal"),
            ("cloacina_full", "cloacina", "full"),
            ("dbos", "dbos", None),
        ):
            small = wl(results, engine, mode, key)
            big = wl(results, engine, mode, key, "scale")
            if big and not size_label:
                size_label = f"{small['tasks'] if small else '?'} -> {big['tasks']} tasks"
            s = small["per_task_ms"] if good(small) else None
            b = big["per_task_ms"] if good(big) else None
            tag = f" [{big['variant']}]" if good(big) and big.get("variant") else ""
            if big is None:
                cols.append("n/a")
            elif b is None:
                cols.append(f"{f'{s:.3f}' if s else 'n/a'} -> {cell(big)}")
            else:
                cols.append(f"{f'{s:.3f}' if s else 'n/a'} -> {b:.3f}{tag} ({ratio(b, s)})")
            ssum[col] = {
                "small_ms_per_task": s,
                "large_ms_per_task": b,
                "large_tasks": big["tasks"] if big else None,
            }
        summary[key] = ssum
        rows.append([f"{key} {size_label}", *cols])
    return rows, summary


def memory_rows(results: dict[str, Any]) -> tuple[list[list[str]], dict[str, Any]]:
    """Resident memory around W4, on a fresh file and on one holding many old runs."""
    rows, summary = [], {}
    for mode in CLOACINA_MODES:
        fresh = wl(results, "cloacina", mode, "W4")
        for key in ("W4", "W4old"):
            w = wl(results, "cloacina", mode, key)
            mem = (w or {}).get("memory")
            if not w or not mem:
                continue
            slower = (
                ratio(w["per_task_ms"], fresh["per_task_ms"])
                if key == "W4old" and good(w) and good(fresh)
                else ""
            )
            rows.append(
                [
                    f"{w.get('label', key)} [{mode}]",
                    cell(w),
                    slower,
                    f"{mem['rss_before_mb']:.1f}",
                    f"{mem['rss_peak_growth_mb']:+.1f}",
                    f"{mem['rss_after_growth_mb']:+.1f}",
                ]
            )
            summary[f"{key}_{mode}"] = {
                "per_task_ms": w["per_task_ms"] if good(w) else None,
                **mem,
                "prepared": w.get("prepared"),
            }
    return rows, summary


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    print(line(header))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(line(r))


def problems_of(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out: list[str] = list(results.get("problems", []))
    for engine in ("cloacina", "dbos"):
        if engine not in args.targets:
            continue
        sides = results.get(engine) or {}
        sides = sides if engine == "cloacina" else {"": sides}
        for mode, side in sides.items():
            name = f"{engine}[{mode}]" if mode else engine
            proc = (side or {}).get("process", {})
            if proc.get("ended", "ok") != "ok":
                out.append(f"{name}: process {proc['ended']}")
            for section in ("workloads", "scale"):
                for key, w in ((side or {}).get(section) or {}).items():
                    for v, ww in {
                        "": w,
                        **{f"/{k}": x for k, x in (w.get("variants") or {}).items()},
                    }.items():
                        if ww.get("error"):
                            out.append(f"{name} {section}.{key}{v}: {ww['error']}")
                        elif not ww.get("valid"):
                            bad = [p for r in ww.get("reps", []) for p in r.get("problems", [])]
                            out.append(f"{name} {section}.{key}{v}: invalid: {bad[:3]}")
    for key, s in (results.get("startup") or {}).items():
        if not s.get("valid"):
            out.append(f"startup {key}: {s.get('errors')}")
    for mode, r in ((results.get("raw") or {}).get("modes") or {}).items():
        if not r.get("valid"):
            out.append(f"raw {mode}: {r.get('problems')}")
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    work = Path(args.workdir).resolve() / f"run-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    sizes = {
        k: getattr(args, k) for k in ("chain", "fan", "runs", "concurrent", "reps", "cloacina_reps")
    }
    results: dict[str, Any] = {
        "meta": {
            "timestamp_utc": stamp,
            "git_commit": git_commit(),
            "python": sys.version.split()[0],
            "executable": sys.executable,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite_version": sqlite3.sqlite_version,
            "workdir": str(work),
            "argv": sys.argv[1:],
            "targets": args.targets,
            "quick": args.quick,
            "scale": args.scale,
            "sizes": sizes,
            "scale_sizes": {"chain": args.scale_chain, "fan": args.scale_fan}
            if args.scale
            else None,
            "startup_reps": args.startup_reps,
            "raw_n": args.raw_n,
            "old_runs": args.old_runs,
            "max_concurrency": args.max_concurrency,
            "loadavg_start": os.getloadavg(),
        },
        "raw": None,
        "cloacina": {},
        "dbos": None,
        "startup": {},
        "problems": [],
    }
    size_args = [
        f"--chain={args.chain}",
        f"--fan={args.fan}",
        f"--runs={args.runs}",
        f"--concurrent={args.concurrent}",
    ]
    scale_args = (
        ["--scale", f"--scale-chain={args.scale_chain}", f"--scale-fan={args.scale_fan}"]
        if args.scale
        else []
    )
    benchlib.log(
        f"benchmark run {stamp}: {', '.join(args.targets)}; sizes {sizes}; work dir {work}"
    )
    busy = busy_warning(results["meta"]["loadavg_start"])
    if busy:
        benchlib.log("!! " + busy)

    if "raw" in args.targets:
        benchlib.log("== raw SQLite commit rate (one INSERT + COMMIT per transaction)")
        results["raw"] = raw_sqlite.measure(str(work / "raw"), args.raw_n, args.reps)

    if "cloacina" in args.targets:
        if importlib.util.find_spec("cloacina") is None:
            results["problems"].append(
                f"cloacina is not importable from {sys.executable}: "
                "install it first (nox -s bench does)"
            )
            benchlib.log("!! " + results["problems"][-1])
        else:
            for mode in args.mode_list:
                out = work / f"cloacina-{mode}.json"
                cmd = [
                    sys.executable,
                    str(BENCH / "cloacina_workloads.py"),
                    f"--mode={mode}",
                    f"--dbdir={work / 'cloacina'}",
                    f"--out={out}",
                    *size_args,
                    f"--reps={args.cloacina_reps}",
                    *scale_args,
                    f"--old-runs={args.old_runs}",
                ]
                if args.max_concurrency is not None:
                    cmd.append(f"--max-concurrency={args.max_concurrency}")
                results["cloacina"][mode] = run_engine(f"cloacina[{mode}]", cmd, out, args.timeout)
            for mode in args.mode_list:
                results["startup"][f"cloacina_{mode}"] = startup(
                    "cloacina", [mode], args.startup_reps, work / "startup"
                )

    if "dbos" in args.targets:
        if importlib.util.find_spec("dbos") is None:
            results["problems"].append(
                f"dbos is not importable from {sys.executable}: pip install 'dbos>=3.4,<3.5'"
            )
            benchlib.log("!! " + results["problems"][-1])
        else:
            out = work / "dbos.json"
            cmd = [
                sys.executable,
                str(BENCH / "peers" / "dbos_workloads.py"),
                f"--dbdir={work / 'dbos'}",
                f"--out={out}",
                f"--variants={args.dbos_variants}",
                f"--scale-variants={args.dbos_scale_variants}",
                *size_args,
                f"--reps={args.reps}",
                *scale_args,
            ]
            results["dbos"] = run_engine("dbos", cmd, out, args.timeout)
            results["startup"]["dbos"] = startup("dbos", [], args.startup_reps, work / "startup")

    results["meta"]["loadavg_end"] = os.getloadavg()
    rows, summary = build_summary(results)
    results["summary"] = summary
    print()
    if busy:
        print("WARNING: " + busy)
    print(
        f"cloacina benchmark {stamp}  (ms per task, median of {args.cloacina_reps} reps for "
        f"cloacina, {args.reps} for DBOS and raw SQLite; "
        f"chain {args.chain}, fan {args.fan}, runs {args.runs}, concurrent {args.concurrent}"
        f"{', QUICK sizes' if args.quick else ''})"
    )
    print_table(
        [
            "workload",
            "cloacina ms/task",
            "cloacina(full) ms/task",
            "DBOS ms/task",
            "speedup vs DBOS (normal, full)",
        ],
        rows,
    )
    if results["raw"]:
        print()
        print_table(
            ["raw SQLite commit", "us/commit", "commits/s"],
            [
                [m, f"{r['us_per_commit']:.1f}", f"{r['commits_per_s']:.0f}"]
                for m, r in results["raw"]["modes"].items()
            ],
        )
    mrows, msum = memory_rows(results)
    if mrows:
        results["summary"]["memory"] = msum
        print()
        print_table(
            [
                "memory (cloacina)",
                "ms/task",
                "vs fresh file",
                "RSS before MB",
                "peak growth MB",
                "growth after MB",
            ],
            mrows,
        )
    if args.scale:
        srows, ssum = scale_rows(results)
        results["summary"]["scale"] = ssum
        print()
        print_table(["scale: ms/task small -> large", "cloacina", "cloacina(full)", "DBOS"], srows)
        if "cloacina" in args.targets:
            # The issue "Context at scale": what a task costs as the context it could
            # see grows (its own harness, see bench/README.md).
            print()
            cmd = [sys.executable, str(Path(__file__).with_name("context_scale.py"))]
            cmd += ["--quick"] if args.quick else ["--reps", str(args.reps)]
            done = subprocess.run(cmd, check=False)
            if done.returncode != 0:
                results["problems"].append(f"context_scale.py exited with {done.returncode}")

    problems = problems_of(results, args)
    results["problems"] = problems
    if problems:
        print()
        print("NOT COUNTED / FAILED:")
        for p in problems:
            print(f"  - {p}")

    rdir = Path(args.results_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    benchlib.write_json(str(rdir / f"{stamp}.json"), results)
    benchlib.write_json(str(rdir / "latest.json"), results)
    print()
    print(f"results: {rdir / 'latest.json'} and {rdir / (stamp + '.json')}")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
