"""ManageSieve wire format (RFC 5804 §4): client commands in, responses out. Sans-I/O.

Theory of operation: `CommandReader.feed(data)` appends bytes to a buffer and returns every
complete `Command` (or `WireError`) now available. A command is a line of atoms, quoted
strings and numbers; a string may instead be a literal `{N+}` CRLF followed by N octets (the
non-synchronizing form RFC 5804 requires; `{N}` is accepted the same way, as other servers
do). Lines longer than `max_line` and literals larger than `max_literal` are refused: the
literal's octets are skipped so the connection stays in step, and the command arrives as a
`WireError` with `code` QUOTA/MAXSIZE. `sasl_mode` makes the next line a bare SASL response
(one string, no command name).

    command  = command-name *(SP argument) CRLF
    argument = string / number
    string   = quoted / literal-c2s
    quoted   = DQUOTE *QUOTED-CHAR DQUOTE     ; "\\" escapes DQUOTE and "\\"
    literal-c2s = "{" number "+}" CRLF *OCTET
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LINE = 8192
MAX_QUOTED = 1024  # RFC 5804 §4: quoted strings are at most 1024 octets


@dataclass(frozen=True)
class Command:
    """One client command: upper-cased name and its arguments (str for strings, int for
    numbers). For a SASL continuation line the name is ""."""

    name: str
    arguments: tuple


@dataclass(frozen=True)
class WireError:
    """A line that could not be parsed; `fatal` asks the server to say BYE and close."""

    message: str
    code: str = ""
    fatal: bool = False


_LITERAL_END = re.compile(rb"\{(\d{1,10})(\+?)\}\r?\n\Z")


class CommandReader:
    """Incremental command parser (see the module docstring)."""

    def __init__(self, max_literal: int = 1 << 20, max_line: int = MAX_LINE):
        self.buffer = bytearray()
        self.max_literal = max_literal
        self.max_line = max_line
        self.sasl_mode = False
        # A command being assembled across literals: the raw pieces so far.
        self._parts: list[bytes | tuple[bytes]] = []
        self._skip = 0              # octets of an oversized literal still to throw away
        self._oversized = False

    def feed(self, data: bytes) -> list[Command | WireError]:
        self.buffer += data
        out: list[Command | WireError] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self.buffer))
                del self.buffer[:n]
                self._skip -= n
                if self._skip:
                    return out
                continue
            if self._parts and isinstance(self._parts[-1], int):
                need = self._parts[-1]
                if len(self.buffer) < need:
                    return out
                self._parts[-1] = (bytes(self.buffer[:need]),)
                del self.buffer[:need]
                continue
            idx = self.buffer.find(b"\n")
            if idx < 0:
                if len(self.buffer) > self.max_line:
                    self.buffer.clear()
                    self._parts.clear()
                    out.append(WireError("line too long", fatal=True))
                return out
            line = bytes(self.buffer[:idx + 1])
            del self.buffer[:idx + 1]
            if len(line) > self.max_line:
                self._parts.clear()
                out.append(WireError("line too long"))
                continue
            m = _LITERAL_END.search(line)
            if m:
                size = int(m.group(1))
                self._parts.append(line[:m.start()])
                if size > self.max_literal:
                    self._skip = size
                    self._oversized = True
                    self._parts.append(("",))
                else:
                    self._parts.append(size)
                continue
            self._parts.append(line)
            parts, self._parts = self._parts, []
            if self._oversized:
                self._oversized = False
                out.append(WireError("literal too large", "QUOTA/MAXSIZE"))
                continue
            out.append(self._parse(parts))

    def _parse(self, parts: list) -> Command | WireError:
        tokens: list = []
        try:
            for part in parts:
                if isinstance(part, tuple):
                    tokens.append(_decode(part[0]))
                else:
                    tokens.extend(_tokens(part.rstrip(b"\r\n")))
        except ValueError as exc:
            self.sasl_mode = False
            return WireError(str(exc))
        if self.sasl_mode:
            self.sasl_mode = False
            return Command("", tuple(tokens))
        if not tokens or not isinstance(tokens[0], _Atom):
            return WireError("expected a command name")
        return Command(str(tokens[0]).upper(), tuple(
            str(t) if isinstance(t, _Atom) else t for t in tokens[1:]))


class _Atom(str):
    """A bare word (command names, NOOP's tag is a string though)."""


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("strings must be UTF-8") from None


def _tokens(line: bytes) -> list:
    out: list = []
    i, n = 0, len(line)
    while i < n:
        c = line[i:i + 1]
        if c == b" ":
            i += 1
        elif c == b'"':
            j = i + 1
            buf = bytearray()
            while True:
                if j >= n:
                    raise ValueError("unterminated quoted string")
                ch = line[j:j + 1]
                if ch == b"\\":
                    if j + 1 >= n or line[j + 1:j + 2] not in (b'"', b"\\"):
                        raise ValueError("bad escape in quoted string")
                    buf += line[j + 1:j + 2]
                    j += 2
                    continue
                if ch == b'"':
                    break
                if ch in (b"\r", b"\n", b"\x00"):
                    raise ValueError("control character in quoted string")
                buf += ch
                j += 1
            if len(buf) > MAX_QUOTED:
                raise ValueError("quoted string longer than 1024 octets")
            out.append(_decode(bytes(buf)))
            i = j + 1
        elif c.isdigit():
            j = i
            while j < n and line[j:j + 1].isdigit():
                j += 1
            if j < n and line[j:j + 1] != b" ":
                raise ValueError("bad number")
            if j - i > 10:
                raise ValueError("number too large")
            out.append(int(line[i:j]))
            i = j
        else:
            j = i
            while j < n and line[j:j + 1] not in (b" ", b'"'):
                j += 1
            word = line[i:j]
            if not re.fullmatch(rb"[A-Za-z*][A-Za-z0-9_*=+/-]*", word):
                shown = "".join(chr(b) if 0x20 < b < 0x7f else "?" for b in word[:20])
                raise ValueError(f"unexpected {shown}")
            out.append(_Atom(word.decode("ascii")))
            i = j
    return out


# -- responses -----------------------------------------------------------------------------

def string(value: str) -> bytes:
    """A string as the server sends it: quoted when it can be, else a literal."""
    raw = value.encode("utf-8")
    if len(raw) <= MAX_QUOTED and b"\r" not in raw and b"\n" not in raw and b"\x00" not in raw:
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw


def response(kind: str, text: str | None = None, code: str = "") -> bytes:
    """`OK`/`NO`/`BYE` [ "(" code ")" ] [ string ] CRLF (RFC 5804 §1.3)."""
    out = kind.encode("ascii")
    if code:
        out += b" (" + code.encode("utf-8") + b")"
    if text is not None:
        out += b" " + string(text)
    return out + b"\r\n"
