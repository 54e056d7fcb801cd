"""The command line with a ``module:attr`` TARGET (a module importable from the current
directory, not a file path), and ``runs list`` filtered by ``--workflow`` and ``--limit``.
Real subprocesses (``python -m cloacina``) on a real database, as in test_cli.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import cli

FLOWS = textwrap.dedent(
    """
    from cloacina import Workflow, task

    @task(id="mod_first")
    def first(ctx):
        return {"n": ctx.get("n", 1)}

    @task(id="mod_second", dependencies=[first])
    def second(ctx):
        return {"double": ctx["n"] * 2}

    @task(id="mod_other")
    def other(ctx):
        return {"other": True}

    flow = Workflow("mod_flow", [first, second])
    other_flow = Workflow("mod_other_flow", [other])

    class Namespace:
        flow = flow
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a module ``flows`` and a package ``pipelines`` (``pipelines.daily``)."""
    (tmp_path / "flows.py").write_text(FLOWS)
    package = tmp_path / "pipelines"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "daily.py").write_text("from flows import flow as daily\n")
    return tmp_path


def test_graph_of_a_module_attr_target(project):
    db = f"sqlite:///{project / 'g.db'}"  # the graph reads no database
    ascii_ = cli("graph", "flows:flow", cwd=project, db=db).stdout
    assert "workflow 'mod_flow'" in ascii_
    assert ascii_.splitlines()[1:] == ["  mod_first", "  mod_second  <- mod_first"], ascii_
    dot = cli("graph", "flows:other_flow", "--format", "dot", cwd=project, db=db).stdout
    assert '"mod_other"' in dot and "->" not in dot, dot
    # A dotted module (a package's module) and a dotted attribute.
    dotted = cli("graph", "pipelines.daily:daily", "--format", "dot", cwd=project, db=db).stdout
    assert '"mod_first" -> "mod_second"' in dotted, dotted
    nested = cli("graph", "flows:Namespace.flow", cwd=project, db=db).stdout
    assert nested == ascii_
    assert not (project / "g.db").exists()


def test_module_attr_target_errors(project):
    db = f"sqlite:///{project / 'e.db'}"
    missing = cli("graph", "flows:nope", cwd=project, db=db, check=False)
    assert missing.returncode == 2 and "nope" in missing.stderr, missing.stderr
    no_module = cli("run", "not_a_module_here:flow", cwd=project, db=db, check=False)
    assert no_module.returncode == 2 and "not_a_module_here" in no_module.stderr
    # The module is imported from the current directory, not from elsewhere.
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    moved = cli("graph", "flows:flow", cwd=elsewhere, db=db, check=False)
    assert moved.returncode == 2 and "flows" in moved.stderr, moved.stderr


def test_run_a_module_attr_target(project, make_db_url):
    db = make_db_url("cli_mod")
    out = cli("-o", "json", "run", "flows:flow", "--ctx", '{"n": 4}', cwd=project, db=db)
    run = json.loads(out.stdout)
    assert run["workflow"] == "mod_flow" and run["status"] == "completed", run
    assert run["context"] == {"n": 4, "double": 8}
    assert set(run["tasks"]) == {"mod_first", "mod_second"}
    dotted = cli("-o", "json", "run", "pipelines.daily:daily", cwd=project, db=db)
    assert json.loads(dotted.stdout)["context"] == {"n": 1, "double": 2}
    listed = json.loads(cli("-o", "json", "runs", "list", cwd=project, db=db).stdout)
    assert len(listed) == 2


def run_ids(*args: str, cwd: Path, db: str) -> list[str]:
    out = cli("-o", "json", "runs", "list", *args, cwd=cwd, db=db)
    return [r["run_id"] for r in json.loads(out.stdout)]


MAKE_RUNS = """
import json, sys
from cloacina import Runner
from flows import flow, other_flow

with Runner(sys.argv[1]) as runner:
    runs = [runner.run(wf, progress=False) for wf in [flow, other_flow] * 2 + [flow]]
assert all(r.status == "completed" for r in runs), runs
print(json.dumps([[r.workflow, r.run_id] for r in runs]))
"""


def test_runs_list_by_workflow_and_limit(project, make_db_url):
    db = make_db_url("cli_list")
    # Five runs, alternating workflows, made one after the other by one process.
    made = subprocess.run(
        [sys.executable, "-c", MAKE_RUNS, db],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    created = [tuple(pair) for pair in json.loads(made.stdout)]
    assert [wf for wf, _ in created] == ["mod_flow", "mod_other_flow"] * 2 + ["mod_flow"]
    newest_first = [run_id for _, run_id in reversed(created)]
    of_flow = [run_id for wf, run_id in reversed(created) if wf == "mod_flow"]
    of_other = [run_id for wf, run_id in reversed(created) if wf == "mod_other_flow"]

    assert run_ids(cwd=project, db=db) == newest_first
    assert run_ids("--workflow", "mod_flow", cwd=project, db=db) == of_flow
    assert run_ids("--workflow", "mod_other_flow", cwd=project, db=db) == of_other
    assert run_ids("--workflow", "no_such_flow", cwd=project, db=db) == []
    assert run_ids("--limit", "2", cwd=project, db=db) == newest_first[:2]
    assert run_ids("--limit", "1", cwd=project, db=db) == newest_first[:1]
    assert run_ids("--limit", "10", cwd=project, db=db) == newest_first
    assert run_ids("--workflow", "mod_flow", "--limit", "2", cwd=project, db=db) == of_flow[:2]
    newest_other = run_ids("--limit", "1", "--workflow", "mod_other_flow", cwd=project, db=db)
    assert newest_other == of_other[:1]
    # Each row is of the workflow asked for.
    rows = json.loads(
        cli("-o", "json", "runs", "list", "--workflow", "mod_flow", cwd=project, db=db).stdout
    )
    assert {r["workflow"] for r in rows} == {"mod_flow"}

    # The table, filtered the same way.
    table = cli("runs", "list", "--workflow", "mod_other_flow", cwd=project, db=db).stdout
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["RUN", "WORKFLOW", "STATUS"], table
    assert [line.split()[0] for line in lines[1:]] == of_other, table
    assert all(line.split()[1] == "mod_other_flow" for line in lines[1:]), table
    limited = cli("runs", "list", "--limit", "3", cwd=project, db=db).stdout.splitlines()
    assert [line.split()[0] for line in limited[1:]] == newest_first[:3], limited


def test_runs_list_limit_zero_and_negative(project, make_db_url):
    db = make_db_url("cli_limits")
    cli("run", "flows:other_flow", cwd=project, db=db)
    assert run_ids("--limit", "0", cwd=project, db=db) == []
    bad = cli("runs", "list", "--limit", "-1", cwd=project, db=db, check=False)
    assert bad.returncode == 2 and "limit" in bad.stderr, bad.stderr
    not_a_number = cli("runs", "list", "--limit", "many", cwd=project, db=db, check=False)
    assert not_a_number.returncode == 2 and "--limit" in not_a_number.stderr
