"""Docs are tests: every ```python block of README.md runs, in a fresh directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert BLOCKS, "README.md should show Python code"


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs(source, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    if 'schema="' in source:
        # A PostgreSQL example: it runs against the test server, in the schema it names.
        from helpers import pg_drop_schema

        server = request.getfixturevalue("pg_server_url")
        schema = re.search(r'schema="(\w+)"', source).group(1)
        monkeypatch.setenv("CLOACINA_DATABASE_URL", server)
        request.addfinalizer(lambda: pg_drop_schema(server, schema))
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(source, str(README), "exec"), namespace)
