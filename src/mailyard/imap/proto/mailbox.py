"""Mailbox names on the wire: modified UTF-7 (RFC 3501 §5.1.3), INBOX, and LIST patterns."""

from __future__ import annotations

import base64
import re

# One encoder for the store and the wire (RFC 3501 §5.1.3); decoding stays lenient here.
from mailyard.maildir.names import encode_mutf7  # noqa: F401

DELIMITER = "."


_SHIFT = re.compile(r"&([A-Za-z0-9+,]*)-")


def decode_mutf7(name: str) -> str:
    """Modified UTF-7 → unicode; a name that is not valid mUTF-7 is returned as sent
    (clients that speak UTF-8 names directly still work)."""
    if "&" not in name:
        return name

    def one(m: re.Match) -> str:
        body = m.group(1)
        if not body:
            return "&"
        b64 = body.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            return base64.b64decode(b64, validate=True).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            raise ValueError("bad modified UTF-7") from None

    try:
        return _SHIFT.sub(one, name)
    except ValueError:
        return name


def normalize(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 §5.1), as is its first hierarchy level name."""
    if name.upper() == "INBOX":
        return "INBOX"
    if name[:6].upper() == "INBOX" + DELIMITER:
        return "INBOX" + name[5:]
    return name


def pattern_regex(reference: str, pattern: str) -> re.Pattern:
    """LIST's `*` (anything) and `%` (anything but the delimiter), RFC 3501 §6.3.8."""
    full = reference + pattern if not pattern.startswith(DELIMITER) or not reference \
        else reference.rstrip(DELIMITER) + pattern
    parts = []
    for ch in full:
        if ch == "*":
            parts.append(".*")
        elif ch == "%":
            parts.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            parts.append(re.escape(ch))
    text = "".join(parts)
    if full[:5].upper() == "INBOX" and (len(full) == 5 or full[5] in DELIMITER + "*%"):
        text = "(?i:INBOX)" + "".join(parts[5:])
    return re.compile(text + r"\Z", re.DOTALL)
