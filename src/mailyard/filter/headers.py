"""Header surgery on raw message bytes: drop forged scan headers, add ours, tag the subject.

We never re-serialise a message through the email package (that would change bytes that
DKIM signatures cover); we cut and insert header lines in the raw text, keeping its line
endings. Folded (continued) lines belong to the field above them (RFC 5322 §2.2.3).
"""

from __future__ import annotations

import re

from mailyard.message import eol_of, field_name, get_header, header_fields, split_message  # noqa: F401

# Scan results anyone could have forged upstream: ours replace them (amavis does the same).
FORGEABLE = re.compile(rb"^(x-spam-[a-z0-9-]*|x-virus-[a-z0-9-]*)$", re.IGNORECASE)


def _encode_value(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def rewrite(message: bytes, add: list[tuple[str, str]], *, subject_prefix: str = "",
            remove: re.Pattern = FORGEABLE) -> bytes:
    """Remove forgeable fields, prepend `add`, prefix the Subject when asked."""
    block, blank, body = split_message(message)
    eol = eol_of(message)
    kept: list[bytes] = []
    subject_seen = False
    for field in header_fields(block):
        name = field_name(field)
        if remove.match(name):
            continue
        if subject_prefix and name.lower() == b"subject" and not subject_seen:
            subject_seen = True
            raw_value = field.split(b":", 1)[1] if b":" in field else b""
            prefix = subject_prefix.encode("utf-8")
            if not raw_value.lstrip().startswith(prefix.strip()):
                field = b"Subject: " + prefix + raw_value.lstrip(b" ")
        kept.append(field)
    if subject_prefix and not subject_seen:
        kept.append(b"Subject: " + subject_prefix.strip().encode() + eol)
    added = [f"{name}: ".encode() + _encode_value(value) + eol for name, value in add]
    if not blank:
        blank = eol
    return b"".join(added) + b"".join(kept) + blank + body
