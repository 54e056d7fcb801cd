"""Fixtures of the crash-safety tests (python/tests/durability/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from durable_helpers import Durable


@pytest.fixture
def durable(tmp_path: Path):
    """make(name) -> a Durable workspace in tmp_path: database file, log and markers
    named after `name`, also the workflow's name (unique to each test)."""

    def make(name: str) -> Durable:
        return Durable(tmp_path, name)

    return make
