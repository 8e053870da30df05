"""The `Received:` trace header an SMTP server prepends (RFC 5321 §4.4, RFC 3848).

    Received: from HELO (NAME [IP])
            by HOSTNAME (mailyard) with ESMTPSA id QUEUEID
            (TLS TLSv1.3 cipher; authenticated as USER)
            for <RCPT>; DATE
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import format_datetime

_UNSAFE = re.compile(r"[^\x21-\x7e]|[()\\]")


def _clean(text: str, utf8: bool = False) -> str:
    """Keep header text one safe token: no spaces, parentheses, controls (or 8-bit)."""
    if utf8:
        return re.sub(r"[\x00-\x20\x7f()\\]", "?", text)[:255]
    return _UNSAFE.sub("?", text)[:255]


def protocol_name(extended: bool, tls: bool, authenticated: bool, lmtp: bool = False) -> str:
    """RFC 3848 `with` keyword: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA (LMTP variants alike)."""
    if not extended and not lmtp:
        return "SMTP"
    base = "LMTP" if lmtp else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(*, helo: str | None, client_ip: str, client_name: str = "",
                    hostname: str, protocol: str, queue_id: str, tls: str | None = None,
                    auth_user: str | None = None, recipient: str | None = None,
                    utf8: bool = False, when: datetime | None = None) -> bytes:
    """The header as bytes, folded, ending with CRLF."""
    when = when or datetime.now(UTC)
    ip_part = f"[IPv6:{client_ip}]" if ":" in client_ip else f"[{client_ip}]"
    name = _clean(client_name) if client_name else "unknown"
    lines = [f"Received: from {_clean(helo or 'unknown', utf8)} ({name} {ip_part})",
             f"\tby {_clean(hostname)} (mailyard) with {protocol} id {queue_id}"]
    notes = []
    if tls:
        notes.append(f"using {_clean_comment(tls)}")
    if auth_user:
        notes.append(f"authenticated as {_clean(auth_user, utf8)}")
    if notes:
        lines.append("\t(" + "; ".join(notes) + ")")
    tail = f"; {format_datetime(when)}"
    if recipient:
        lines.append(f"\tfor <{_clean(recipient, utf8)}>{tail}")
    else:
        lines[-1] += tail
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _clean_comment(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]|[()\\]", "?", text)[:255]
