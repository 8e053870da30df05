"""Command framing: cut the client's byte stream into whole commands, literals included.

Theory of operation: IMAP commands are lines, except that a line ending in a literal
announcement `{n}` (synchronizing) or `{n+}` (LITERAL+, RFC 7888) is followed by exactly n raw
bytes and then the rest of the command. The framer is fed bytes (`feed`) and hands out events
(`next_event`):

- `NEED_DATA`: nothing complete yet; read more from the socket.
- `Continuation()`: a synchronizing literal was announced and accepted; the server must send
  `+ go ahead` before the client sends the literal (RFC 3501 §7.5).
- `RawCommand(data)`: one complete command, literals inline, exactly as sent (the parser takes
  it from there).
- `Refusal(tag, text, fatal)`: the command was refused before any of its payload was
  buffered: a literal larger than `max_literal` or a command longer than `max_command`. A
  refused synchronizing literal never gets its `+`, so the client sends nothing more for it
  (RFC 7889 §4: `NO [TOOBIG]`); a refused non-synchronizing literal (whose bytes are already
  on the way) or an overlong line cannot be resynchronized, so it is fatal (BYE, close).

Memory is bounded by `max_command + max_literal`: a literal is only accepted once it is known
to fit (all literals of one command count together), and the line scan gives up at `max_command` bytes without a CRLF.

`next_line()` is the line mode used for AUTHENTICATE responses and IDLE's DONE.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NEED_DATA = object()

_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n\Z")
_TAG = re.compile(rb"[^\s(){%*\"\\\]]{1,64}")


@dataclass(frozen=True)
class Continuation:
    """Send `+ go ahead`: the client is waiting to send a synchronizing literal."""


@dataclass(frozen=True)
class RawCommand:
    data: bytes


@dataclass(frozen=True)
class Refusal:
    tag: str
    text: str
    fatal: bool


class CommandFramer:
    """Sans-I/O splitter of the client stream into commands (see module docstring)."""

    def __init__(self, max_command: int = 65536, max_literal: int = 64 * 1024 * 1024):
        self.max_command = max_command
        self.max_literal = max_literal
        self._buf = bytearray()
        self._parts: list[bytes] = []      # pieces of the command being assembled
        self._line_bytes = 0               # non-literal bytes in the current command
        self._literal_left = 0             # bytes of the current literal still to come
        self._literal_total = 0            # literal bytes in the current command
        self._scan_from = 0
        self._pending: list[object] = []

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _tag(self) -> str:
        head = self._parts[0] if self._parts else bytes(self._buf[:80])
        m = _TAG.match(head)
        return m.group().decode("ascii", "replace") if m else "*"

    def next_line(self) -> bytes | object:
        """Line mode: one CRLF-terminated line (without the CRLF), or NEED_DATA."""
        idx = self._buf.find(b"\n")
        if idx < 0:
            if len(self._buf) > self.max_command:
                self._buf.clear()
                return b"*"   # garbage: treated as a cancelled exchange
            return NEED_DATA
        line = bytes(self._buf[:idx]).rstrip(b"\r")
        del self._buf[:idx + 1]
        return line

    def next_event(self):
        if self._pending:
            return self._pending.pop(0)
        while True:
            if self._literal_left:
                take = min(self._literal_left, len(self._buf))
                if take == 0:
                    return NEED_DATA
                self._parts.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._literal_left -= take
                if self._literal_left:
                    return NEED_DATA
                self._scan_from = 0
                continue
            idx = self._buf.find(b"\n", self._scan_from)
            if idx < 0:
                self._scan_from = len(self._buf)
                if self._line_bytes + len(self._buf) > self.max_command:
                    return self._refuse_fatal("command line too long")
                return NEED_DATA
            line = bytes(self._buf[:idx + 1])
            self._line_bytes += len(line)
            if self._line_bytes > self.max_command:
                del self._buf[:idx + 1]
                return self._refuse_fatal("command line too long")
            del self._buf[:idx + 1]
            self._scan_from = 0
            self._parts.append(line)
            m = _LITERAL_AT_END.search(line)
            if m is None:
                data = b"".join(self._parts)
                self._parts.clear()
                self._line_bytes = 0
                self._literal_total = 0
                return RawCommand(data)
            size = int(m.group(1))
            synchronizing = not m.group(2)
            self._literal_total += size
            if self._literal_total > self.max_literal:
                tag = self._tag()
                self._parts.clear()
                self._line_bytes = 0
                self._literal_total = 0
                if synchronizing:
                    # RFC 7889 §4 / RFC 3501 §7.1.2: refuse without the continuation.
                    return Refusal(tag, "[TOOBIG] literal too big", fatal=False)
                return Refusal(tag, "[TOOBIG] non-synchronizing literal too big", fatal=True)
            self._literal_left = size
            if synchronizing and size and len(self._buf) < size:
                return Continuation()
            if synchronizing and size == 0:
                return Continuation()

    def _refuse_fatal(self, text: str) -> Refusal:
        tag = self._tag()
        self._buf.clear()
        self._parts.clear()
        self._line_bytes = 0
        self._literal_total = 0
        self._scan_from = 0
        return Refusal(tag, text, fatal=True)
