"""Fixtures of the crash-safety tests (python/tests/durability/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from durable_helpers import Durable


@pytest.fixture
def durable(tmp_path: Path):
    """A Durable workspace whose workflow name is unique to the test."""

    def make(name: str) -> Durable:
        return Durable(tmp_path, name)

    return make
