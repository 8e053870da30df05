"""The IMAP lexer: a cursor over one complete command (literals inline) with grammar primitives.

Each method consumes one production of RFC 3501 §9 at the cursor or raises `ParseError`.
The grammar rules are quoted above the methods that implement them.
"""

from __future__ import annotations

import datetime as dt
import re

from mailyard.imap.proto.types import STAR, ParseError, SequenceSet

# atom-char = any CHAR except atom-specials
# atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials
_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\\]]+")
# ASTRING-CHAR = ATOM-CHAR / resp-specials   (resp-specials = "]")
_ASTRING_ATOM = re.compile(rb"[^\x00-\x20\x7f(){%*\"\\]+")
# list-mailbox = 1*list-char / string ; list-char = ATOM-CHAR / list-wildcards / resp-specials
_LIST_ATOM = re.compile(rb"[^\x00-\x20\x7f(){\"\\]+")
_LITERAL = re.compile(rb"~?\{(\d{1,20})\+?\}\r?\n")
_NUMBER = re.compile(rb"\d{1,20}")
# sequence-set = (seq-number / seq-range) ["," sequence-set]
_SEQSET = re.compile(rb"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*")
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
# date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE
_DATE_TIME = re.compile(
    rb'"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
# date = date-text / DQUOTE date-text DQUOTE ; date-text = date-day "-" date-month "-" date-year
_DATE = re.compile(rb'("?)(\d{1,2})-([A-Za-z]{3})-(\d{4})\1')


class Lexer:
    """A cursor over one command's bytes."""

    def __init__(self, data: bytes, tag: str = "*"):
        self.data = data
        self.pos = 0
        self.tag = tag

    def error(self, message: str, code: str | None = None) -> ParseError:
        return ParseError(message, self.tag, code)

    # -- position ------------------------------------------------------------------------
    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:self.pos + n]

    def at_end(self) -> bool:
        return self.data[self.pos:] in (b"\r\n", b"\n", b"")

    def end(self) -> None:
        if not self.at_end():
            raise self.error("unexpected characters at end of command")

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.error("expected a space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == b" ":
            self.pos += 1
            return True
        return False

    def expect(self, text: bytes) -> None:
        if self.data[self.pos:self.pos + len(text)].upper() != text.upper():
            raise self.error(f"expected {text.decode()}")
        self.pos += len(text)

    def accept(self, text: bytes) -> bool:
        if self.data[self.pos:self.pos + len(text)].upper() == text.upper():
            self.pos += len(text)
            return True
        return False

    def _match(self, regex: re.Pattern) -> bytes | None:
        m = regex.match(self.data, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        return m.group()

    # -- primitives ----------------------------------------------------------------------
    def atom(self) -> str:
        m = self._match(_ATOM)
        if m is None:
            raise self.error("expected an atom")
        return m.decode("ascii", "replace")

    def number(self) -> int:
        m = self._match(_NUMBER)
        if m is None:
            raise self.error("expected a number")
        return int(m)

    def nz_number(self) -> int:
        n = self.number()
        if n == 0 or n > 0xFFFFFFFF:
            raise self.error("expected a non-zero 32-bit number")
        return n

    def literal(self) -> bytes | None:
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            return None
        size = int(m.group(1))
        start = m.end()
        if start + size > len(self.data):
            raise self.error("literal shorter than announced")
        self.pos = start + size
        return self.data[start:start + size]

    def quoted(self) -> bytes | None:
        # quoted = DQUOTE *QUOTED-CHAR DQUOTE ; QUOTED-CHAR = <any TEXT-CHAR except
        # quoted-specials> / "\" quoted-specials
        if self.peek() != b'"':
            return None
        out = bytearray()
        i = self.pos + 1
        data = self.data
        while i < len(data):
            c = data[i]
            if c == 0x22:
                self.pos = i + 1
                return bytes(out)
            if c == 0x5C:
                if i + 1 < len(data) and data[i + 1] in (0x22, 0x5C):
                    out.append(data[i + 1])
                    i += 2
                    continue
                raise self.error("bad escape in quoted string")
            if c in (0x0D, 0x0A, 0x00):
                raise self.error("unterminated quoted string")
            out.append(c)
            i += 1
        raise self.error("unterminated quoted string")

    def string_bytes(self) -> bytes:
        value = self.quoted()
        if value is None:
            value = self.literal()
        if value is None:
            raise self.error("expected a string")
        return value

    def astring_bytes(self) -> bytes:
        # astring = 1*ASTRING-CHAR / string
        m = self._match(_ASTRING_ATOM)
        if m is not None:
            return m
        return self.string_bytes()

    def astring(self) -> str:
        return self.astring_bytes().decode("utf-8", "replace")

    def nstring(self) -> bytes | None:
        if self.accept(b"NIL"):
            return None
        return self.string_bytes()

    def list_mailbox(self) -> str:
        m = self._match(_LIST_ATOM)
        if m is not None:
            return m.decode("utf-8", "replace")
        return self.string_bytes().decode("utf-8", "replace")

    def sequence_set(self) -> SequenceSet:
        m = self._match(_SEQSET)
        if m is None:
            raise self.error("expected a sequence set")
        ranges = []
        for item in m.split(b","):
            a, _, b = item.partition(b":")
            lo = STAR if a == b"*" else int(a)
            hi = lo if not b else (STAR if b == b"*" else int(b))
            if lo > 0xFFFFFFFF or hi > 0xFFFFFFFF or (a != b"*" and lo == 0) or \
                    (b and b != b"*" and hi == 0):
                raise self.error("sequence numbers are between 1 and 4294967295")
            ranges.append((lo, hi))
        return SequenceSet(tuple(ranges))

    def flag(self) -> str:
        # flag = "\Answered" / ... / flag-keyword / flag-extension ; flag-extension = "\" atom
        if self.accept(b"\\"):
            if self.accept(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> tuple[str, ...]:
        # flag-list = "(" [flag *(SP flag)] ")"
        self.expect(b"(")
        flags = []
        if not self.accept(b")"):
            while True:
                flags.append(self.flag())
                if self.accept(b")"):
                    break
                self.sp()
        return tuple(flags)

    def flags_or_list(self) -> tuple[str, ...]:
        if self.peek() == b"(":
            return self.flag_list()
        flags = [self.flag()]
        while self.peek() == b" " and self.peek(2)[1:] not in (b"", b"\r", b"\n"):
            self.pos += 1
            flags.append(self.flag())
        return tuple(flags)

    def date(self) -> dt.date:
        m = self._match(_DATE)
        if m is None:
            raise self.error("expected a date like 1-Feb-2024")
        mm = re.match(_DATE, m)
        month = _MONTHS.get(mm.group(3).decode().lower())
        try:
            return dt.date(int(mm.group(4)), month or 0, int(mm.group(2)))
        except (ValueError, TypeError):
            raise self.error("invalid date") from None

    def date_time(self) -> dt.datetime | None:
        m = _DATE_TIME.match(self.data, self.pos)
        if m is None:
            return None
        self.pos = m.end()
        day, mon, year, hh, mi, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.decode().lower())
        try:
            offset = dt.timedelta(hours=int(zh), minutes=int(zm))
            tz = dt.timezone(offset if sign == b"+" else -offset)
            return dt.datetime(int(year), month or 0, int(day), int(hh), int(mi), int(ss),
                               tzinfo=tz)
        except (ValueError, TypeError):
            raise self.error("invalid date-time") from None

    def paren_atoms(self) -> tuple[str, ...]:
        """`(A B C)` of atoms (used by STATUS items, RETURN options...)."""
        self.expect(b"(")
        out = []
        if not self.accept(b")"):
            while True:
                out.append(self.atom().upper())
                if self.accept(b")"):
                    break
                self.sp()
        return tuple(out)
