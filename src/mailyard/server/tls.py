"""TLS contexts: the configured pair, or a self-signed pair generated under data_dir/tls."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from mailyard.config import Settings


def ensure_certificate(settings: Settings) -> tuple[str, str]:
    """Return (cert, key) paths, generating a self-signed pair on first run when unset."""
    if settings.tls.cert:
        return settings.tls.cert, settings.tls.key
    tls_dir = settings.data_path / "tls"
    cert, key = tls_dir / "selfsigned.crt", tls_dir / "selfsigned.key"
    if cert.is_file() and key.is_file():
        return str(cert), str(key)
    tls_dir.mkdir(parents=True, exist_ok=True)
    _generate_self_signed(settings.server.hostname, cert, key)
    return str(cert), str(key)


def _generate_self_signed(hostname: str, cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(hostname), x509.DNSName("localhost"),
           x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    tmp_key = key_path.with_suffix(".tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    os.replace(tmp_key, key_path)
    tmp_cert = cert_path.with_suffix(".tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_cert, cert_path)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
