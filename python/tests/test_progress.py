"""Live progress of runner.run(): one line on a terminal's stderr, rewritten in place;
nothing when stderr is not a terminal (unless asked), nothing when turned off."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import pytest
from cloacina import Runner, Workflow, task

SCRIPT = """
import sys, time
from cloacina import Runner, Workflow, task

@task
def first(ctx):
    time.sleep(0.6)

@task(dependencies=["first"])
def second(ctx):
    time.sleep(0.6)

@task(dependencies=["first"])
def broken(ctx):
    raise ValueError("boom")

with Runner(sys.argv[1]) as runner:
    result = runner.run(Workflow("terminal_progress", [first, second, broken]))
print("STATUS", result.status, flush=True)
"""


def run_on_a_terminal(script: str, db_url: str) -> str:
    """Runs ``script`` with stdout and stderr on a pseudo-terminal; returns what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, db_url],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(10)
    os.close(leader)
    return b"".join(chunks).decode()


def test_a_terminal_gets_one_line_rewritten_in_place(db_url):
    shown = run_on_a_terminal(SCRIPT, db_url)
    assert "STATUS failed" in shown
    lines = [part for part in shown.replace("\r\n", "\n").split("\r") if part.strip()]
    running = [line for line in lines if "tasks done" in line and "failed:" not in line]
    assert any("0/3 tasks done (1 running)" in line for line in running), shown
    assert any("2/3 tasks done (1 failed, 1 running)" in line for line in running), shown
    assert "cloacina: terminal_progress: failed: 3/3 tasks done (1 failed)" in shown


def test_no_progress_when_stderr_is_not_a_terminal_or_when_turned_off(db_url, capfd):
    @task(id="quiet_progress")
    def quiet(ctx):
        time.sleep(0.3)

    wf = Workflow("quiet_progress_wf", [quiet])
    with Runner(db_url) as runner:
        assert runner.run(wf).status == "completed"
        assert "tasks done" not in capfd.readouterr().err
        assert runner.run(wf, progress=False).status == "completed"
        assert "tasks done" not in capfd.readouterr().err
        # Forced on, it goes to stderr even when that is not a terminal.
        assert runner.run(wf, progress=True).status == "completed"
        err = capfd.readouterr().err
        assert "\rcloacina: quiet_progress_wf: completed: 1/1 tasks done" in err
        with pytest.raises(TypeError, match="progress must be a bool or None"):
            runner.run(wf, progress="yes")
