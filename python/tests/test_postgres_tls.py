"""TLS to PostgreSQL: the wheel's client (rustls, the system's CA roots) encrypts when the
URL asks for it, and refuses a certificate it cannot verify under verify-full. A server
of its own, with TLS on and a self-signed certificate."""

from __future__ import annotations

import datetime
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pg_server
import pytest
from cloacina import DatabaseError, Runner, Workflow, task
from helpers import pg_connect

pytestmark = pytest.mark.postgres


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    os.chmod(key_file, 0o600)
    if os.geteuid() == 0:  # the server runs as its own user, which must own the key
        user = pwd.getpwnam(pg_server.SERVER_USER)
        for path in (directory, cert_file, key_file):
            os.chown(path, user.pw_uid, user.pw_gid)
    return cert_file, key_file


@pytest.fixture(scope="module")
def tls_server(pg_server_url):
    directory = Path(tempfile.mkdtemp(prefix="cloacina-tls-"))
    os.chmod(directory, 0o755)
    try:
        cert, key = _self_signed(directory)
        settings = (*pg_server.SETTINGS, "ssl=on", f"ssl_cert_file={cert}", f"ssl_key_file={key}")
        with pg_server.running(settings=settings) as server:
            yield server.url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_sslmode_require_encrypts_every_connection(tls_server):
    @task(id="tls_task")
    def tls_task(ctx):
        ctx["done"] = True

    url = f"{tls_server}?sslmode=require&application_name=cloacina_tls_test"
    with Runner(url, schema="tls_require") as runner:
        assert runner.run(Workflow("tls_wf", [tls_task]), {}).context == {"done": True}
        with pg_connect(tls_server) as conn:
            rows = conn.execute(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.application_name = 'cloacina' AND a.datname IS NOT NULL"
            ).fetchall()
    # The engine's connections (writer, listener, readers) are all encrypted.
    assert rows and all(r["ssl"] for r in rows), rows


def test_verify_full_refuses_a_certificate_no_trusted_authority_signed(tls_server):
    with pytest.raises(DatabaseError, match=r"cannot connect to .*certificate"):
        Runner(f"{tls_server}?sslmode=verify-full&connect_timeout=5", schema="tls_verify")
