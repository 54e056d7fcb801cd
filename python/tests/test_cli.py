"""The ``cloacina`` command line, through real subprocesses on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import cli

FLOW = textwrap.dedent(
    """
    from cloacina import Fail, Workflow, task

    @task(id="cli_load")
    def load(ctx):
        return {"rows": ctx.get("n", 3)}

    @task(id="cli_check", dependencies=[load])
    def check(ctx):
        if ctx.get("fail"):
            raise Fail("asked to fail")
        return {"checked": ctx["rows"] * 2}

    wf = Workflow("cli_flow", [load, check])
    """
)


@pytest.fixture
def flow(tmp_path: Path) -> Path:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return path


def test_run_list_show_as_json(tmp_path, flow, make_db_url):
    db = make_db_url("cli")
    out = cli("-o", "json", "run", f"{flow}:wf", "--ctx", '{"n": 5}', cwd=tmp_path, db=db)
    run = json.loads(out.stdout)
    assert run["status"] == "completed" and run["context"] == {"n": 5, "rows": 5, "checked": 10}

    failed = cli(
        "-o",
        "json",
        "run",
        f"{flow}:wf",
        "--ctx",
        '{"fail": true}',
        cwd=tmp_path,
        db=db,
        check=False,
    )
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["tasks"]["cli_check"]["error"] == "Fail: asked to fail"

    listed = cli("-o", "jsonl", "runs", "list", cwd=tmp_path, db=db)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["status"] for r in rows] == ["failed", "completed"]
    assert rows[1]["run_id"] == run["run_id"]

    shown = cli("runs", "show", rows[0]["run_id"], cwd=tmp_path, db=db)
    assert "cli_check" in shown.stdout and "raise Fail" in shown.stdout
    # The DAG, each task with its status, in merge order.
    dag = shown.stdout.splitlines()
    assert "  completed  cli_load" in dag
    assert "  failed     cli_check  <- cli_load" in dag

    table = cli("runs", "list", "--status", "completed", cwd=tmp_path, db=db)
    assert run["run_id"] in table.stdout and rows[0]["run_id"] not in table.stdout

    # --db and -o work after the subcommand too.
    other = make_db_url("other")
    after = cli("runs", "list", "--db", db, "-o", "json", cwd=tmp_path, db=other)
    assert [r["run_id"] for r in json.loads(after.stdout)] == [r["run_id"] for r in rows]


def test_context_from_a_file_no_wait_cancel_and_db_info(tmp_path, flow, db_url, backend):
    db = db_url
    ctx = tmp_path / "ctx.json"
    ctx.write_text('{"n": 7}')
    started = cli(
        "-o", "json", "run", f"{flow}:wf", "--ctx", f"@{ctx}", "--no-wait", cwd=tmp_path, db=db
    )
    run_id = json.loads(started.stdout)["run_id"]
    info = json.loads(cli("-o", "json", "db", "info", cwd=tmp_path, db=db).stdout)
    assert sum(info["runs"].values()) == 1
    # The schema version is the backend's latest migration.
    migrations = Path(__file__).parents[2] / "rust" / "store" / "migrations" / backend
    latest = max(int(f.name.split("_")[0]) for f in migrations.glob("*.sql"))
    assert info["schema_version"] == latest
    migrated = json.loads(cli("-o", "json", "db", "migrate", cwd=tmp_path, db=db).stdout)
    assert migrated["schema_version"] == latest and migrated["migrated"] is True
    cancelled = cli("-o", "json", "runs", "cancel", run_id, cwd=tmp_path, db=db, check=False)
    assert json.loads(cancelled.stdout)["run_id"] == run_id


def test_resume_after_fixing_the_task(tmp_path, flow, db_url):
    db = db_url
    failed = cli(
        "-o",
        "json",
        "run",
        f"{flow}:wf",
        "--ctx",
        '{"fail": true}',
        cwd=tmp_path,
        db=db,
        check=False,
    )
    run_id = json.loads(failed.stdout)["run_id"]
    flow.write_text(FLOW.replace('if ctx.get("fail"):', "if False:"))
    resumed = cli("-o", "json", "runs", "resume", run_id, str(flow), cwd=tmp_path, db=db)
    assert json.loads(resumed.stdout)["status"] == "completed"


def test_resume_without_a_target_queues_the_run_for_a_worker(tmp_path, flow, db_url):
    ran = cli("-o", "json", "run", f"{flow}:wf", "--ctx", '{"fail": true}', cwd=tmp_path,
              db=db_url, check=False)  # fmt: skip
    assert ran.returncode == 1
    run_id = json.loads(ran.stdout)["run_id"]
    flow.write_text(FLOW.replace('if ctx.get("fail"):', "if False:"))
    queued = cli("-o", "json", "runs", "resume", run_id, cwd=tmp_path, db=db_url)
    assert json.loads(queued.stdout) == {"run_id": run_id, "status": "queued"}
    shown, _ = served_until_completed(flow, run_id, tmp_path, db_url)
    assert shown["status"] == "completed"
    assert shown["tasks"]["cli_load"]["attempts"] == 1
    assert shown["tasks"]["cli_check"]["attempts"] == 2
    again = cli("runs", "resume", run_id, cwd=tmp_path, db=db_url, check=False)
    assert again.returncode == 2 and "already completed" in again.stderr


def test_graph_formats(tmp_path, flow):
    db = f"sqlite:///{tmp_path / 'g.db'}"  # the graph reads no database
    dot = cli("graph", f"{flow}:wf", "--format", "dot", cwd=tmp_path, db=db).stdout
    assert '"cli_load" -> "cli_check"' in dot
    mermaid = cli("graph", f"{flow}:wf", "--format", "mermaid", cwd=tmp_path, db=db).stdout
    assert mermaid.startswith("flowchart LR") and "-->" in mermaid
    ascii_ = cli("graph", f"{flow}:wf", cwd=tmp_path, db=db).stdout
    assert "cli_check  <- cli_load" in ascii_
    svg = cli("graph", f"{flow}:wf", "--format", "svg", cwd=tmp_path, db=db).stdout
    assert svg.startswith("<svg") and ">cli_check</text>" in svg


def test_errors_are_short_and_mask_passwords(tmp_path, flow):
    db = f"sqlite:///{tmp_path / 'e.db'}"
    bad = cli(
        "--db",
        "postgresql://me:hunter2x@db.example/x",
        "runs",
        "list",
        cwd=tmp_path,
        db=db,
        check=False,
    )
    assert bad.returncode == 2
    assert "hunter2x" not in bad.stdout + bad.stderr
    assert bad.stderr.startswith("cloacina: error:")
    missing = cli("run", "no_such_module:wf", cwd=tmp_path, db=db, check=False)
    assert missing.returncode == 2 and "no_such_module" in missing.stderr


def test_help_version_and_import_cloacina_stays_free_of_the_cli(tmp_path):
    helped = subprocess.run(
        [sys.executable, "-m", "cloacina", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "runs" in helped.stdout and "graph" in helped.stdout and "db" in helped.stdout
    version = subprocess.run(
        [sys.executable, "-m", "cloacina", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert version.stdout.startswith("cloacina ")
    code = "import sys, cloacina; print('cloacina.cli' in sys.modules, 'argparse' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split()[0] == "False"


LIGHT = """
import sys, time
started = time.perf_counter()
from cloacina.cli import main
try:
    main([{arg!r}])
except SystemExit:
    pass
import cloacina.testing  # the pytest plugin, as pytest imports it
print("LOADED" if "cloacina._native" in sys.modules else "LIGHT")
"""


@pytest.mark.parametrize("arg", ["--help", "--version"])
def test_help_version_and_the_plugin_load_no_engine(arg):
    out = subprocess.run(
        [sys.executable, "-c", LIGHT.format(arg=arg)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == "LIGHT", out.stdout


def served_until_completed(
    flow: Path, run_id: str, cwd: Path, db: str
) -> tuple[dict, subprocess.Popen]:
    """Runs `cloacina worker FLOW` until run `run_id` is completed (60 s at most), then
    stops it; returns the run as `runs show -o json` gives it, and the worker."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "cloacina", "worker", str(flow)],
        cwd=cwd,
        env={**os.environ, "CLOACINA_DATABASE_URL": db},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            shown = json.loads(cli("-o", "json", "runs", "show", run_id, cwd=cwd, db=db).stdout)
            if shown["status"] == "completed" or time.monotonic() > deadline:
                return shown, worker
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


MARKED = textwrap.dedent(
    """
    import os
    from cloacina import Workflow, task

    print("flow imported")                        # user output: never on stdout with -o json

    @task(id="marked")
    def marked(ctx):
        print("task body ran")
        with open(ctx["marker"], "a") as f:
            f.write(f"{os.getpid()}\\n")

    wf = Workflow("marked_flow", [marked])
    """
)


def test_no_wait_queues_the_run_and_a_worker_runs_it_once(tmp_path, db_url):
    flow = tmp_path / "marked.py"
    flow.write_text(MARKED)
    marker = tmp_path / "marker.txt"
    ctx = json.dumps({"marker": str(marker)})
    queued = cli(
        "-o", "json", "run", f"{flow}:wf", "--ctx", ctx, "--no-wait", cwd=tmp_path, db=db_url
    )
    document = json.loads(queued.stdout)  # stdout is the JSON alone: the print went to stderr
    assert document["status"] == "queued"
    assert "flow imported" in queued.stderr
    assert not marker.exists(), "--no-wait must not start the task in the CLI process"

    shown, worker = served_until_completed(flow, document["run_id"], tmp_path, db_url)
    assert shown["status"] == "completed"
    assert shown["tasks"]["marked"]["attempts"] == 1
    assert marker.read_text().split() == [str(worker.pid)]


def test_without_a_database_commands_fail_naming_where_to_give_one(tmp_path, flow):
    for args in (["runs", "list"], ["db", "info"], ["run", f"{flow}:wf"]):
        proc = cli(*args, cwd=tmp_path, db=None, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        for hint in ("--db", "$CLOACINA_DATABASE_URL", "[tool.cloacina]"):
            assert hint in proc.stderr, (args, proc.stderr)
    assert not list(tmp_path.glob("*.db")), "no command may invent a database file"
    # The graph reads no database: it needs none.
    assert cli("graph", f"{flow}:wf", cwd=tmp_path, db=None, check=False).returncode == 0


def test_the_database_can_come_from_pyproject_toml(tmp_path, flow):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.cloacina]\ndatabase_url = "sqlite:///runs/cli.db"\n'
    )
    (tmp_path / "runs").mkdir()
    below = tmp_path / "src" / "deeper"
    below.mkdir(parents=True)
    ran = cli("-o", "json", "run", f"{flow}:wf", cwd=below, db=None, check=False)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["status"] == "completed"
    # A relative SQLite path is taken from the pyproject.toml's directory.
    assert (tmp_path / "runs" / "cli.db").exists()
    listed = cli("-o", "json", "runs", "list", cwd=tmp_path, db=None, check=False)
    assert [r["workflow"] for r in json.loads(listed.stdout)] == ["cli_flow"]


def test_graph_as_json(tmp_path, flow):
    db = f"sqlite:///{tmp_path / 'g.db'}"
    document = json.loads(cli("-o", "json", "graph", f"{flow}:wf", cwd=tmp_path, db=db).stdout)
    assert document["workflow"] == "cli_flow" and document["version"]
    assert document["tasks"] == [
        {"id": "cli_load", "dependencies": []},
        {"id": "cli_check", "dependencies": ["cli_load"]},
    ]
    lines = cli("-o", "jsonl", "graph", f"{flow}:wf", cwd=tmp_path, db=db).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["cli_load", "cli_check"]
    assert not (tmp_path / "g.db").exists()


def test_json_output_keeps_the_workflows_prints_off_stdout(tmp_path, db_url):
    flow = tmp_path / "marked.py"
    flow.write_text(MARKED)
    ctx = json.dumps({"marker": str(tmp_path / "m.txt")})
    ran = cli("-o", "json", "run", f"{flow}:wf", "--ctx", ctx, cwd=tmp_path, db=db_url)
    assert json.loads(ran.stdout)["status"] == "completed"
    assert "flow imported" in ran.stderr and "task body ran" in ran.stderr
    table = cli("run", f"{flow}:wf", "--ctx", ctx, cwd=tmp_path, db=db_url)
    assert "flow imported" in table.stdout and "task body ran" in table.stdout
