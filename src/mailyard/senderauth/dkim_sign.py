"""DKIM signing of mail from local domains (dkimpy), and key management.

Keys live under data_dir/dkim/DOMAIN/SELECTOR.key (PEM, 0600) with SELECTOR.txt holding the
DNS TXT record to publish; data_dir/dkim/DOMAIN/active names the selector that signs, so a
rotation is: generate a new selector, publish its record, then `mailyard dkim activate`.
"""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# RFC 6376 §5.4.1: From MUST be signed; these are the fields worth protecting.
SIGNED_HEADERS = [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
                  b"in-reply-to", b"references", b"mime-version", b"content-type",
                  b"content-transfer-encoding", b"list-unsubscribe"]
_SELECTOR = re.compile(r"^[a-z0-9][a-z0-9\-]{0,62}$")


class DkimKeyError(Exception):
    pass


def key_dir(data_dir: Path, domain: str) -> Path:
    from mailyard.accounts import normalize_domain

    return Path(data_dir) / "dkim" / normalize_domain(domain)


def default_selector() -> str:
    return time.strftime("my%Y%m")


def generate(data_dir: Path, domain: str, selector: str | None = None, bits: int = 2048,
             activate: bool = True) -> tuple[str, str]:
    """Create a key pair; returns (selector, the TXT record value)."""
    selector = (selector or default_selector()).lower()
    if not _SELECTOR.match(selector):
        raise DkimKeyError(f"bad selector {selector!r} (letters, digits and '-')")
    directory = key_dir(data_dir, domain)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{selector}.key"
    if path.exists():
        raise DkimKeyError(f"{path} exists; pick another selector to rotate keys")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    (directory / f"{selector}.txt").write_text(record + "\n")
    if activate:
        (directory / "active").write_text(selector + "\n")
    return selector, record


def activate(data_dir: Path, domain: str, selector: str) -> None:
    directory = key_dir(data_dir, domain)
    if not (directory / f"{selector}.key").is_file():
        raise DkimKeyError(f"no key for selector {selector!r} of {domain}")
    (directory / "active").write_text(selector + "\n")


def active_key(data_dir: Path, domain: str) -> tuple[str, bytes] | None:
    try:
        directory = key_dir(data_dir, domain)
        selector = (directory / "active").read_text().strip()
        return selector, (directory / f"{selector}.key").read_bytes()
    except (OSError, ValueError):
        return None


def record_for(data_dir: Path, domain: str, selector: str | None = None) -> tuple[str, str]:
    directory = key_dir(data_dir, domain)
    if selector is None:
        found = active_key(data_dir, domain)
        if found is None:
            raise DkimKeyError(f"no DKIM key for {domain}; run `mailyard dkim generate "
                               f"{domain}`")
        selector = found[0]
    try:
        return selector, (directory / f"{selector}.txt").read_text().strip()
    except OSError:
        raise DkimKeyError(f"no DKIM record for selector {selector!r} of {domain}") from None


def sign(message: bytes, data_dir: Path, domain: str) -> bytes:
    """`message` with a DKIM-Signature prepended, or unchanged if `domain` has no key."""
    found = active_key(data_dir, domain)
    if found is None:
        return message
    selector, key = found
    present = {f.split(b":", 1)[0].strip().lower()
               for f in message.split(b"\r\n\r\n", 1)[0].split(b"\n") if b":" in f}
    headers = [h for h in SIGNED_HEADERS if h in present] or [b"from"]
    signature = dkim.sign(message, selector.encode(), domain.encode(), key,
                          include_headers=headers, canonicalize=(b"relaxed", b"relaxed"))
    if b"\r\n" in message[:2000]:
        signature = signature.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return signature + message
