"""Backends are registered in one place, the ``cloacina.backends`` entry-point group: the
URL's scheme picks one, and an unknown scheme names the schemes served."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cloacina import ConfigurationError, Runner, backends


def test_sqlite_is_served_and_registered_as_an_entry_point():
    from importlib.metadata import entry_points

    assert "sqlite" in backends.available()
    names = {e.name: e.value for e in entry_points(group=backends.ENTRY_POINT_GROUP)}
    assert names.get("sqlite") == "cloacina.backends:SQLITE"


def test_an_unknown_scheme_names_the_schemes_served():
    with pytest.raises(ConfigurationError) as info:
        Runner("mysql://root:hunter2x@db/x")
    text = str(info.value)
    assert "'postgres:', 'postgresql:', 'sqlite:'" in text and "hunter2x" not in text
    assert {"postgres", "postgresql", "sqlite"} <= set(backends.available())


@pytest.mark.sqlite_only("schema= is a PostgreSQL option, refused on SQLite")
def test_schema_is_refused_on_sqlite(db_url):
    with pytest.raises(ConfigurationError, match="schema='tenant_a'"):
        Runner(db_url, schema="tenant_a")


PLUGIN = """
import sys
from cloacina import backends

sys.path.insert(0, sys.argv[1])
assert "fake" in backends.available(), backends.available()
target = backends.resolve("fake://anything")
assert target == ("fake target", "fake://anything"), target
print("OK")
"""


def test_a_backend_registered_by_another_distribution_is_found(tmp_path):
    site = tmp_path / "site"
    (site / "fakebackend-0.1.dist-info").mkdir(parents=True)
    (site / "fakebackend-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fakebackend\nVersion: 0.1\n"
    )
    (site / "fakebackend-0.1.dist-info" / "entry_points.txt").write_text(
        "[cloacina.backends]\nfake = fakebackend_mod:BACKEND\n"
    )
    (site / "fakebackend_mod.py").write_text(
        textwrap.dedent(
            """
            from cloacina.backends import Backend

            BACKEND = Backend("fake", ("fake",), lambda url: ("fake target", url))
            """
        )
    )
    env_code = f"import sys; sys.path.insert(0, {str(site)!r})\n" + PLUGIN
    proc = subprocess.run(
        [sys.executable, "-c", env_code, str(site)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
