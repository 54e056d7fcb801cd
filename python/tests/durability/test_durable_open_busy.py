"""Opening a Runner while another connection writes to the file waits, it does not fail.

Two processes that open a Runner on a new database file at the same moment (see
test_durable_idempotency.py) race on creating it: while one writes, the other must wait
(the engine sets a 30 s busy timeout), not fail with "database is locked". This test
makes that situation deterministic: the test holds a write transaction on a new file
(still in rollback-journal mode, as a file being created is) while a child process opens
a Runner on it, and commits 1 s later.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from durable_helpers import SCRIPTS, integrity

HOLD = 1.0


def test_runner_waits_for_a_concurrent_writer_on_a_new_file(tmp_path: Path):
    path = tmp_path / "new.db"
    with closing(sqlite3.connect(str(path), isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE written_by_someone_else (x)")
        with subprocess.Popen(
            [sys.executable, str(SCRIPTS / "open_runner.py"), "sqlite:///" + str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            time.sleep(HOLD)
            conn.execute("COMMIT")
            try:
                stdout, stderr = proc.communicate(timeout=60)
            finally:
                proc.kill()
    assert proc.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["ok"], (
        f"Runner() failed after {out['seconds']:.2f} s instead of waiting for the writer: "
        f"{out['error']}"
    )
    assert out["seconds"] >= HOLD - 0.3, out  # it did wait for the commit
    assert integrity(path) == "ok"
