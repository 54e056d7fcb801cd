"""A PostgreSQL schema cloacina cannot use is refused before anything is written to it:
one migrated by a newer cloacina, one holding another application's tables, an invalid
name; and a schema given twice must agree."""

from __future__ import annotations

import secrets

import pytest
from cloacina import ConfigurationError, Runner
from helpers import pg_connect, pg_drop_schema, pg_schema_exists, with_schema

pytestmark = pytest.mark.postgres


@pytest.fixture
def fresh_schema(pg_server_url):
    name = f"t_{secrets.token_hex(6)}"
    yield name
    pg_drop_schema(pg_server_url, name)


def test_a_schema_from_a_newer_cloacina_is_refused(pg_server_url, fresh_schema):
    url = with_schema(pg_server_url, fresh_schema)
    Runner(url).close()
    with pg_connect(url) as conn:
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, "
            "execution_time) VALUES (999, 'from the future', true, '\\x00'::bytea, 0)"
        )
    with pytest.raises(ConfigurationError, match="newer version of cloacina") as exc:
        Runner(url)
    assert fresh_schema in str(exc.value)


def test_a_schema_of_another_application_is_refused_and_left_untouched(pg_server_url, fresh_schema):
    with pg_connect(pg_server_url) as conn:
        conn.execute(f"CREATE SCHEMA {fresh_schema}")
        conn.execute(f"CREATE TABLE {fresh_schema}.invoices (id int)")
    with pytest.raises(ConfigurationError, match="another application") as exc:
        Runner(pg_server_url, schema=fresh_schema)
    assert "invoices" in str(exc.value)
    with pg_connect(pg_server_url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (fresh_schema,)
        ).fetchall()
    assert [t["tablename"] for t in tables] == ["invoices"]


@pytest.mark.parametrize("name", ["Tenant", "1tenant", "pg_tenant", "a-b", "x" * 41, ""])
def test_an_invalid_schema_name_is_refused_before_connecting(pg_server_url, name):
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        Runner(pg_server_url, schema=name)
    if name:
        assert not pg_schema_exists(pg_server_url, name)


def test_the_schema_given_twice_must_agree(pg_server_url):
    with pytest.raises(ConfigurationError, match="differs"):
        Runner(with_schema(pg_server_url, "tenant_a"), schema="tenant_b")
