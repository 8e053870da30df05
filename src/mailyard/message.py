"""Raw message helpers shared by every stage: split header and body, walk header fields.

We never re-serialise a message through the email package where bytes matter (DKIM
signatures cover them); these work on the raw text and keep its line endings. Folded
(continued) lines belong to the field above them (RFC 5322 §2.2.3).
"""

from __future__ import annotations

import re


def split_message(message: bytes) -> tuple[bytes, bytes, bytes]:
    """(header block without the blank line, the blank line, body); EOL style preserved."""
    crlf = message.find(b"\r\n\r\n")
    lf = message.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return message[:crlf + 2], b"\r\n", message[crlf + 4:]
    if lf != -1:
        return message[:lf + 1], b"\n", message[lf + 2:]
    # Headers only (or no header/body separator at all).
    return message, b"", b""


def header_fields(block: bytes) -> list[bytes]:
    """Raw fields, each with its continuation lines and line endings."""
    fields: list[bytes] = []
    for line in block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip()


def eol_of(message: bytes) -> bytes:
    first = message.find(b"\n")
    return b"\r\n" if first > 0 and message[first - 1:first] == b"\r" else b"\n"


def get_header(message: bytes, name: str) -> list[str]:
    """Unfolded values of every `name` field (for reading our own headers back)."""
    block, _, _ = split_message(message)
    wanted = name.lower().encode()
    out = []
    for field in header_fields(block):
        if field_name(field).lower() == wanted:
            value = field.split(b":", 1)[1]
            out.append(re.sub(rb"\r?\n[ \t]", b" ", value).strip().decode("utf-8", "replace"))
    return out
