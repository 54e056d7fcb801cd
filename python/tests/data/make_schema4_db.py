"""Writes ``schema4.db``: a database file made by cloacina at schema 4 (before the
``upstream_failed`` status), for the test that upgrades such a file in place.

Run once with that version installed (commit aa352dd): ``python make_schema4_db.py``.
The file is committed; this script documents how it was made.
"""

from __future__ import annotations

import os
import sys

from cloacina import Fail, Runner, Workflow, rules, task

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema4.db")
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)


@task
def extract(ctx):
    raise Fail("source unreachable")


@task(dependencies=[extract])
def transform(ctx):
    return {"t": 1}


@task(dependencies=[transform])
def load(ctx):
    return {"l": 1}


@task(dependencies=[extract], trigger=rules.none_failed())
def join(ctx):
    return {"j": 1}


@task(dependencies=[transform], trigger=rules.none_failed())
def late_join(ctx):
    return {"late": 1}


@task
def ok(ctx):
    return {"ok": 1}


@task(dependencies=[ok], trigger=rules.context_value("mode", "==", "full"))
def optional(ctx):
    return {"optional": 1}


@task(dependencies=[optional])
def after_optional(ctx):
    return {"after": 1}


wf = Workflow("schema4", [extract, transform, load, join, late_join, ok, optional, after_optional])
with Runner("sqlite:///" + path) as runner:
    result = runner.run(wf, {"mode": "quick"})
    print(result.run_id, result.status, {t: r.status for t, r in result.tasks.items()})
    print({t: r.reason for t, r in result.tasks.items() if r.reason})
sys.exit(0)
