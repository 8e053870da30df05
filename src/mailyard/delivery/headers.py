"""Trace headers the delivery agent adds, and the little header reading it needs.

RFC 5321 §4.4: the final delivery inserts `Return-Path` with the envelope sender; a
`Return-Path` already in the message is not to be trusted, so it is removed. `Delivered-To`
(the de-facto standard of Postfix and Dovecot) names the mailbox the copy was delivered to and
lets us notice forwarding loops. A `Received` line records the LMTP hop (RFC 5321 §4.4).
"""

from __future__ import annotations

import email.utils
import re
import time

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_message(message: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line end, body) — the body starts after the blank
    line; a message without a blank line is all header."""
    if message.startswith((b"\r\n", b"\n")):
        return b"", message  # no header at all: the blank line comes first
    m = _HEADER_END.search(message)
    if m is None:
        return message, b""
    cut = m.start() + (2 if message[m.start():m.start() + 2] == b"\r\n" else 1)
    return message[:cut], message[cut:]


def header_fields(header: bytes) -> list[tuple[str, str]]:
    """(lower-cased name, unfolded value) for each field of a header block."""
    fields: list[tuple[str, str]] = []
    for line in re.split(rb"\r?\n", header):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip().decode("utf-8", "replace"))
            continue
        name, colon, value = line.partition(b":")
        if colon:
            fields.append((name.strip().lower().decode("ascii", "replace"),
                           value.strip().decode("utf-8", "replace")))
    return fields


def header_values(message: bytes, name: str) -> list[str]:
    header, _ = split_message(message)
    name = name.lower()
    return [v for n, v in header_fields(header) if n == name]


def strip_fields(header: bytes, name: str) -> bytes:
    """Remove every occurrence of a field (with its continuation lines) from a header block."""
    out: list[bytes] = []
    skipping = False
    target = name.lower().encode() + b":"
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and line.strip():
            if not skipping:
                out.append(line)
            continue
        skipping = line.lower().replace(b" ", b"").startswith(target)
        if not skipping:
            out.append(line)
    return b"".join(out)


def add_trace(message: bytes, *, sender: str, delivered_to: str, helo: str, client_ip: str,
              hostname: str, session_id: str, when: float | None = None) -> bytes:
    """The message with Return-Path, Delivered-To and Received prepended (CRLF)."""
    header, body = split_message(message)
    header = strip_fields(header, "Return-Path")
    date = email.utils.formatdate(when if when is not None else time.time(), localtime=True)
    trace = (f"Return-Path: <{sender}>\r\n"
             f"Delivered-To: {delivered_to}\r\n"
             f"Received: from {helo or 'unknown'} ([{client_ip}])\r\n"
             f"\tby {hostname} (mailyard) with LMTP id {session_id}\r\n"
             f"\tfor <{delivered_to}>; {date}\r\n")
    return trace.encode("utf-8") + header + body
