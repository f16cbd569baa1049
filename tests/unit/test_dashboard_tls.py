"""The provider TLS context verifies against a hashed CA directory (loaded on demand)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hermes_container.dashboard.auth.providers import tls_context

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj: x509.Certificate) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _capath(tmp: Path, name: str, ca: x509.Certificate) -> Path:
    directory = tmp / name
    directory.mkdir()
    pem = directory / "ca.pem"
    pem.write_bytes(_pem(ca))
    digest = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(pem)], capture_output=True, text=True
    ).stdout.strip()
    (directory / f"{digest}.0").write_bytes(_pem(ca))
    return directory


def _serve_once(context: ssl.SSLContext) -> int:
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=run, daemon=True).start()
    return port


def test_tls_context_uses_hashed_ca_dir(tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test CA", ca_key, None, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", server_key, ("Test CA", ca_key), ca=False)
    (tmp_path / "server.pem").write_bytes(
        _pem(server)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem")

    good = tls_context(str(_capath(tmp_path, "good", ca)))
    assert good.verify_mode == ssl.CERT_REQUIRED and good.check_hostname
    port = _serve_once(server_ctx)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with good.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.recv(2) == b"ok"

    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("Other CA", other_key, None, ca=True)
    bad = tls_context(str(_capath(tmp_path, "bad", other)))
    port = _serve_once(server_ctx)
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            bad.wrap_socket(raw, server_hostname="127.0.0.1")


def test_tls_context_falls_back_to_a_bundle(tmp_path: Path) -> None:
    context = tls_context(str(tmp_path))  # no hashed certificates here
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] > 10
