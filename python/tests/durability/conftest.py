"""Fixtures of the crash-safety tests (python/tests/durability/)."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from durable_helpers import Durable
from helpers import pg_drop_schema
from pg_helpers import Tenant


@pytest.fixture
def durable(tmp_path: Path):
    """make(name) -> a Durable workspace in tmp_path: database file, log and markers
    named after `name`, also the workflow's name (unique to each test)."""

    def make(name: str) -> Durable:
        return Durable(tmp_path, name)

    return make


@pytest.fixture
def pg_tenant(pg_server_url: str, tmp_path: Path):
    """make(server_url=None) -> a Tenant: a new schema `t_<random hex>` (not created: the
    first runner creates and migrates it) on the test server, or on `server_url`; dropped
    after the test. Skipped without $CLOACINA_TEST_PG_URL, failed when $CI is set."""
    made: list[Tenant] = []

    def make(server_url: str | None = None) -> Tenant:
        tenant = Tenant(server_url or pg_server_url, "t_" + secrets.token_hex(8), tmp_path)
        made.append(tenant)
        return tenant

    yield make
    for tenant in made:
        pg_drop_schema(tenant.server_url, tenant.schema)


@pytest.fixture
def private_pg(pg_server_url: str):
    """A PostgreSQL server of the test's own (pg_server.PgServer: restart(),
    add_password_user()), stopped and removed after it: for what the shared server must
    not undergo. Skipped when none can be started, failed when $CI is set."""
    import pg_server

    server = pg_server.PgServer()
    try:
        server.start()
    except (pg_server.PgUnavailable, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"cannot start a PostgreSQL server: {exc}", pytrace=False)
        pytest.skip(f"cannot start a PostgreSQL server: {exc}")
    try:
        yield server
    finally:
        server.stop()
