"""Response formatting primitives: strings (atom / quoted / literal), lists, dates, flags."""

from __future__ import annotations

import datetime as dt
import re

from mailyard.imap.proto import mailbox as mbox

_SAFE_QUOTED = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*\Z")
_ATOM_SAFE = re.compile(r"[^\x00-\x20\x7f-\uffff(){%*\"\\\]]+\Z")
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
NIL = b"NIL"


def string(value: bytes | str) -> bytes:
    """A quoted string when it can be one (RFC 3501 §4.3), else a literal."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if len(value) < 1024 and _SAFE_QUOTED.match(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(value)


def literal(value: bytes) -> bytes:
    return b"{%d}\r\n" % len(value) + value


def nstring(value: bytes | str | None) -> bytes:
    return NIL if value is None else string(value)


def astring(value: str) -> bytes:
    if value and _ATOM_SAFE.match(value):
        return value.encode("ascii")
    return string(value)


def mailbox_name(name: str, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7 unless UTF8=ACCEPT was enabled."""
    wire = name if utf8 else mbox.encode_mutf7(name)
    if wire.upper() == "INBOX":
        return b"INBOX"
    return string(wire)


def flag_list(flags) -> bytes:
    return b"(" + " ".join(flags).encode("utf-8", "replace") + b")"


def internal_date(when: dt.datetime | float) -> bytes:
    """date-time = "dd-Mon-yyyy hh:mm:ss +zzzz" (RFC 3501 §9)."""
    if not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(float(when), dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    offset = when.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
            f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} '
            f'{sign}{minutes // 60:02d}{minutes % 60:02d}"').encode()


def seq_list(numbers) -> bytes:
    """Compact `1:3,7` form of a set of numbers (ESEARCH ALL, VANISHED, COPYUID)."""
    from mailyard.imap.proto.types import SequenceSet

    return str(SequenceSet.of(numbers)).encode()
