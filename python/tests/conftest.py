"""Shared fixtures: a fresh SQLite file per test, a runner on it, and ways to look inside.

The engine's task registry is global to the process. Tests define their tasks inside the
test function, so a later test that reuses an id simply replaces the earlier definition
(which the engine supports, as a notebook re-running a cell would).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The test modules import helpers.py from this folder whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from cloacina import Runner
from helpers import query


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    # db_path is absolute, so this is "sqlite:////tmp/.../test.db" (four slashes).
    return "sqlite:///" + str(db_path)


@pytest.fixture
def runner(db_url: str):
    r = Runner(db_url, max_concurrency=4)
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
def rows(db_path: Path):
    """rows(sql, *params) -> list of dict rows read from the test's database file."""

    def fetch(sql: str, *params):
        return query(db_path, sql, params)

    return fetch
