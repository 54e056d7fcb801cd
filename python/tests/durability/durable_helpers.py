"""Helpers of the durability tests: child processes that get SIGKILLed, crash snapshots."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from helpers import query

SCRIPTS = Path(__file__).parent / "scripts"
DURABLE_RUN = SCRIPTS / "durable_run.py"
FINAL = ("completed", "failed", "cancelled")


class Child:
    """A script run as a subprocess whose stdout (JSON lines) is read line by line.

    stderr goes to a file so that a failing assertion can show it. Always used as a
    context manager: the process is killed and reaped, and its pipes closed, on exit.
    """

    def __init__(
        self,
        script: Path | None,
        args: list[str],
        workdir: Path,
        label: str,
        env: dict[str, str] | None = None,
    ) -> None:
        """Runs `python script args...`, or `python args...` when script is None
        (`args` = ["-m", "cloacina", ...]); `env` is added to this process's environment."""
        self.label = label
        self.stderr_path = workdir / f"{label}.stderr"
        self._stderr = open(self.stderr_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, *([str(script)] if script is not None else []), *args],
            cwd=str(workdir),
            env={**os.environ, **env} if env else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._stderr.close()

    def stderr(self) -> str:
        if not self._stderr.closed:  # readable after the child exited too
            self._stderr.flush()
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        return (
            f"[{self.label} pid {self.pid} rc {self.proc.poll()}]\n"
            f"stdout so far: {self.seen}\nstderr:\n{self.stderr()[-4000:]}"
        )

    def event(self, timeout: float = 30.0) -> dict:
        """The next JSON line the child prints."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s\n{self.describe()}") from None
        if line is None:
            raise AssertionError(f"the child exited before printing\n{self.describe()}")
        self.seen.append(line.strip())
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"not JSON: {line!r}\n{self.describe()}") from None

    def expect(self, kind: str, timeout: float = 30.0) -> dict:
        event = self.event(timeout)
        assert event.get("event") == kind, f"expected {kind!r}, got {event}\n{self.describe()}"
        return event

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def sigkill(self) -> None:
        """SIGKILL, then reap: the pid no longer exists when this returns."""
        assert self.proc.poll() is None, f"the child already exited\n{self.describe()}"
        os.kill(self.pid, signal.SIGKILL)
        rc = self.proc.wait(timeout=30)
        assert rc == -signal.SIGKILL, rc

    def finish(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s\n{self.describe()}") from None


class Durable:
    """One test's working directory: a database file, a side-effect log, marker files."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.db_path = workdir / f"{name}.db"
        self.url = "sqlite:///" + str(self.db_path)
        self.log = workdir / f"{name}.log"
        self.markers = workdir / f"{name}.markers"
        self.markers.mkdir(parents=True, exist_ok=True)
        self._children = 0
        self._snapshots = 0

    def child(
        self, mode: str, kind: str, *extra: str, label: str | None = None, name: str = ""
    ) -> Child:
        """durable_run.py MODE for this workspace; `name` overrides the workflow name."""
        self._children += 1
        label = label or f"{self.name}-{mode}-{self._children}"
        args = [
            mode,
            "--db",
            self.url,
            "--name",
            name or self.name,
            "--kind",
            kind,
            "--log",
            str(self.log),
            "--markers",
            str(self.markers),
            *extra,
        ]
        return Child(DURABLE_RUN, args, self.workdir, label)

    def run_child(self, mode: str, kind: str, *extra: str, timeout: float = 60.0) -> dict:
        """Runs a child to its end and returns its "finished" event."""
        with self.child(mode, kind, *extra) as proc:
            proc.expect("runner_open", timeout=timeout)
            done = proc.event(timeout)
            if done.get("event") == "started":
                done = proc.event(timeout)
            assert done.get("event") == "finished", f"{done}\n{proc.describe()}"
            assert proc.finish(timeout) == 0, proc.describe()
        return done

    def marker(self, task_id: str) -> Path:
        return self.markers / f"{task_id}.started"

    def wait_marker(self, task_id: str, proc: Child, timeout: float = 30.0) -> None:
        path = self.marker(task_id)
        deadline = time.monotonic() + timeout
        while not path.exists():
            assert proc.proc.poll() is None, f"child exited before {task_id} started\n" + (
                proc.describe()
            )
            assert time.monotonic() < deadline, f"{task_id} never started\n{proc.describe()}"
            time.sleep(0.005)

    def executions(self) -> Counter:
        """How many times each task id was executed, from the side-effect log."""
        if not self.log.exists():
            return Counter()
        return Counter(line.split(" ")[0] for line in self.log.read_text().splitlines())

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def snapshot(self) -> Path:
        """A copy of the database as the killed process left it (main file and WAL).

        The tests read and integrity-check the copy, so the original stays exactly as
        the crash left it (Python's sqlite3 would checkpoint and delete the WAL on close)
        and the recovering process is the first to open it.
        """
        self._snapshots += 1
        target = self.workdir / f"{self.name}.snapshot-{self._snapshots}"
        target.mkdir()
        for suffix in ("", "-wal"):
            source = Path(str(self.db_path) + suffix)
            if source.exists():
                shutil.copy2(source, target / (source.name))
        return target / self.db_path.name

    def rows(self, sql: str, *params, path: Path | None = None) -> list[dict]:
        return query(path or self.db_path, sql, params)

    def tasks(self, run_id: str, path: Path | None = None) -> dict[str, dict]:
        return {
            r["task_id"]: r
            for r in self.rows("SELECT * FROM run_tasks WHERE run_id = ?", run_id, path=path)
        }


def integrity(path: Path) -> str:
    rows = query(path, "PRAGMA integrity_check")
    return "; ".join(str(next(iter(r.values()))) for r in rows)


def event_kinds(result: dict) -> list[str]:
    return [e["kind"] for e in result["events"]]


def events_of(result: dict, kind: str) -> list[dict]:
    return [e for e in result["events"] if e["kind"] == kind]
