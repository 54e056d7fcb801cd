"""PostgreSQL URLs that cannot work fail fast with a clear cloacina error (DatabaseError
or ConfigurationError) naming the URL with its password masked; the password never
appears in the exception's str, repr or traceback, nor in any log line (the runner's
process logs everything, at DEBUG, to its stderr)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from contextlib import closing
from urllib.parse import unquote

import pytest
from durable_helpers import SCRIPTS

pytestmark = pytest.mark.postgres

SECRET = "Xyzzy-9f3%40pw"  # as written in a URL; the password is "Xyzzy-9f3@pw"
RIGHT = "Right-Pw-71"
USER = "pwuser"


def leaks(text: str) -> list[str]:
    """The forms of a password found in text."""
    forms = {SECRET, unquote(SECRET), "Xyzzy", RIGHT}
    return sorted(f for f in forms if f in text)


def open_runner(url: str, *args: str, cwd) -> dict:
    """scripts/pg_proc.py open: the outcome of Runner(url), from a process of its own;
    checks the password is nowhere in its output."""
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "pg_proc.py"), "open", "--db", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
    )
    assert proc.returncode == 0, proc
    assert leaks(proc.stdout + proc.stderr) == [], f"password leaked:\n{proc.stdout}\n{proc.stderr}"
    (line,) = proc.stdout.splitlines()
    outcome = json.loads(line)
    outcome["stderr"] = proc.stderr
    return outcome


def closed_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed


def assert_error(outcome: dict, kind: str, *phrases: str) -> str:
    assert outcome["event"] == "error", outcome
    assert outcome["type"] == kind, outcome
    assert "CloacinaError" in outcome["bases"], outcome
    message = outcome["str"]
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    assert message in outcome["repr"] or outcome["repr"].startswith(kind), outcome["repr"]
    return message


def test_refused_and_unreachable_servers_fail_fast(tmp_path):
    port = closed_port()
    url = f"postgresql://{USER}:{SECRET}@127.0.0.1:{port}/postgres"
    refused = open_runner(url, "--schema", "tenant_a", cwd=tmp_path)
    message = assert_error(refused, "DatabaseError", f"postgresql://{USER}:***@127.0.0.1:{port}/")
    assert "refused" in message.lower(), message
    assert refused["seconds"] < 2.0, refused

    # A non-routable address: nothing answers (or, behind a sandbox's proxy, something
    # that is not PostgreSQL does): either way a DatabaseError within about 2 s.
    url = f"postgresql://{USER}:{SECRET}@10.255.255.1:5432/postgres?connect_timeout=1"
    unreachable = open_runner(url, cwd=tmp_path)
    message = assert_error(
        unreachable, "DatabaseError", f"postgresql://{USER}:***@10.255.255.1:5432/postgres"
    )
    print(
        f"\nrefused in {refused['seconds']:.3f} s; non-routable in "
        f"{unreachable['seconds']:.2f} s: {message}"
    )
    assert unreachable["seconds"] < 2.5, unreachable

    # A server that accepts the connection and never answers: the connect timeout.
    with silent_server() as port:
        url = f"postgresql://{USER}:{SECRET}@127.0.0.1:{port}/postgres?connect_timeout=1"
        silent = open_runner(url, "--schema", "tenant_a", cwd=tmp_path)
    message = assert_error(
        silent, "DatabaseError", f"postgresql://{USER}:***@127.0.0.1:{port}/postgres", "1.0 s"
    )
    print(f"silent server: {silent['seconds']:.2f} s: {message}")
    assert 0.9 < silent["seconds"] < 2.5, silent


@contextlib.contextmanager
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never says anything."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


def test_wrong_password_missing_database_and_bad_schemas(private_pg, tmp_path):
    right_url = private_pg.add_password_user(USER, RIGHT)
    assert RIGHT in right_url
    host = f"127.0.0.1:{private_pg.port}"
    masked = f"postgresql://{USER}:***@{host}/postgres"

    # The right password opens (so the rule requiring one is in force), shown masked.
    opened = open_runner(right_url, "--schema", "tenant_ok", cwd=tmp_path)
    assert opened["event"] == "opened", opened
    assert opened["url"] == masked, opened
    assert leaks(opened["repr"]) == []

    wrong = open_runner(f"postgresql://{USER}:{SECRET}@{host}/postgres", cwd=tmp_path)
    message = assert_error(wrong, "DatabaseError", masked, "password authentication failed")
    assert wrong["seconds"] < 5, wrong

    missing = open_runner(f"postgresql://{USER}:{RIGHT}@{host}/no_such_db", cwd=tmp_path)
    message = assert_error(
        missing, "DatabaseError", f"postgresql://{USER}:***@{host}/no_such_db", "no_such_db"
    )
    assert "does not exist" in message, message

    url = f"postgresql://{USER}:{SECRET}@{host}/postgres"
    for schema in ("Bad-Name", "pg_catalog", "x" * 41, "1abc", "a b"):
        bad = open_runner(url, "--schema", schema, cwd=tmp_path)
        message = assert_error(bad, "ConfigurationError", json.dumps(schema))
    in_url = open_runner(url + "?options=-csearch_path%3DBad-Name", cwd=tmp_path)
    assert_error(in_url, "ConfigurationError", '"Bad-Name"')
    differs = open_runner(url + "?options=-csearch_path%3Dtenant_a", "--schema", "tenant_b",
                          cwd=tmp_path)  # fmt: skip
    assert_error(differs, "ConfigurationError", '"tenant_a"', '"tenant_b"', masked)

    # The command line says the same, masked, with exit code 2.
    cli = subprocess.run(
        [sys.executable, "-m", "cloacina", "--db", f"postgresql://{USER}:{SECRET}@{host}/postgres",
         "runs", "list"],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path),
    )  # fmt: skip
    assert cli.returncode == 2, cli
    assert leaks(cli.stdout + cli.stderr) == [], cli
    assert masked in cli.stderr and "password authentication failed" in cli.stderr, cli.stderr
