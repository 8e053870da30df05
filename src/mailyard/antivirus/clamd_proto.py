"""The clamd protocol, sans-I/O: bytes in, typed events out, reply bytes back.

Theory of operation (clamd's own documentation, `man clamd`, is the spec): a client sends
one command, in one of three forms — `zCOMMAND\\0` (NUL-terminated, the recommended form),
`nCOMMAND\\n` (newline-terminated), or a bare `COMMAND\\n` (legacy) — and gets replies ended
the same way. Without a session the connection carries one command and is closed after its
reply. `IDSESSION` opens a session: every later command must use the z or n form, each
reply is prefixed with the command's number (`1: PONG`), and `END` closes the session.
`INSTREAM` is followed by chunks, each a 4-byte big-endian length and that many bytes,
ended by a zero length; more than `stream_max_length` bytes in all is refused with
clamd's own message, after which the connection is closed (the rest of the upload cannot
be told from a next command).

`ClamdConnection.receive_data(bytes)`, then `next_event()` until `NEED_DATA`; events are
`Command`, `StreamComplete`, `StreamTooLong`, `SessionEnd`, `ProtocolError`. Replies are
built with `reply(event, lines)`; the I/O around it (`clamd_server`) does the scanning.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NEED_DATA = object()
MAX_COMMAND = 4096 + 32  # a path of PATH_MAX plus the command word
SIZE_LIMIT_REPLY = "INSTREAM size limit exceeded."
UNKNOWN_REPLY = "UNKNOWN COMMAND"

# Commands that take a path argument; the rest take none.
PATH_COMMANDS = {"SCAN", "CONTSCAN", "MULTISCAN", "ALLMATCHSCAN"}
SIMPLE_COMMANDS = {"PING", "VERSION", "RELOAD", "SHUTDOWN", "STATS", "VERSIONCOMMANDS",
                   "DETSTATSCLEAR", "DETSTATS", "FILDES"}
COMMANDS = PATH_COMMANDS | SIMPLE_COMMANDS | {"INSTREAM", "IDSESSION", "END"}


@dataclass(frozen=True)
class Command:
    """A command to carry out: `name` (upper case) and `argument` (a path, or "")."""

    name: str
    argument: str
    request_id: int | None
    terminator: bytes


@dataclass(frozen=True)
class StreamComplete:
    """An INSTREAM upload, whole."""

    data: bytes
    request_id: int | None
    terminator: bytes


@dataclass(frozen=True)
class StreamTooLong:
    request_id: int | None
    terminator: bytes


@dataclass(frozen=True)
class SessionEnd:
    pass


@dataclass(frozen=True)
class ProtocolError:
    """Malformed input; `reply` (if any) is sent, then the connection is closed."""

    message: str
    terminator: bytes = b"\n"


class ClamdConnection:
    """One client connection's protocol state."""

    def __init__(self, stream_max_length: int = 100 * 1024 * 1024):
        self.stream_max_length = stream_max_length
        self._buffer = bytearray()
        self.in_session = False
        self._next_id = 1
        self._stream: bytearray | None = None
        self._stream_command: Command | None = None
        self.closed = False

    # -- input ----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self):
        if self.closed:
            return NEED_DATA
        if self._stream is not None:
            return self._next_chunk()
        return self._next_command()

    def _next_command(self):
        buf = self._buffer
        if not buf:
            return NEED_DATA
        first = buf[0:1]
        if first == b"z":
            terminator, start = b"\0", 1
        elif first == b"n":
            terminator, start = b"\n", 1
        else:
            terminator, start = b"\n", 0
        end = buf.find(terminator, start)
        if end < 0:
            if len(buf) > MAX_COMMAND:
                return self._fail("command too long", terminator)
            return NEED_DATA
        line = bytes(buf[start:end])
        del buf[:end + 1]
        if terminator == b"\n":
            line = line.rstrip(b"\r")
        if start == 0 and self.in_session:
            return self._fail("only z or n commands are allowed in a session", terminator)
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        name, _, argument = text.partition(" ")
        name = name.upper()
        if name not in COMMANDS:
            # clamd answers UNKNOWN COMMAND and closes; so do we.
            return self._fail(UNKNOWN_REPLY, terminator)
        if name in PATH_COMMANDS and not argument:
            return self._fail(f"{name} needs a path", terminator)
        if name == "IDSESSION":
            if self.in_session:
                return self._fail("already in a session", terminator)
            self.in_session = True
            return self._next_command()
        if name == "END":
            self.closed = True
            return SessionEnd()
        request_id = None
        if self.in_session:
            request_id = self._next_id
            self._next_id += 1
        command = Command(name, argument, request_id, terminator)
        if name == "INSTREAM":
            self._stream = bytearray()
            self._stream_command = command
            return self._next_chunk()
        return command

    def _next_chunk(self):
        buf = self._buffer
        command = self._stream_command
        while True:
            if len(buf) < 4:
                return NEED_DATA
            (length,) = struct.unpack(">I", buf[:4])
            if length == 0:
                del buf[:4]
                data = bytes(self._stream)
                self._stream = None
                return StreamComplete(data, command.request_id, command.terminator)
            if len(self._stream) + length > self.stream_max_length:
                self._stream = None
                self.closed = True
                return StreamTooLong(command.request_id, command.terminator)
            if len(buf) < 4 + length:
                return NEED_DATA
            self._stream += buf[4:4 + length]
            del buf[:4 + length]

    def _fail(self, message: str, terminator: bytes) -> ProtocolError:
        self.closed = True
        return ProtocolError(message, terminator)

    # -- output ---------------------------------------------------------------------------
    def reply(self, event, lines: list[str] | str) -> bytes:
        """Reply bytes for `event`: each line numbered (in a session) and terminated."""
        if isinstance(lines, str):
            lines = [lines]
        terminator = getattr(event, "terminator", b"\n")
        prefix = f"{event.request_id}: " if getattr(event, "request_id", None) else ""
        return b"".join((prefix + line).encode("utf-8", "surrogateescape") + terminator
                        for line in lines)

    @property
    def keep_open(self) -> bool:
        """After a reply: keep reading (in a session) or close (one-shot connection)."""
        return self.in_session and not self.closed


def format_result(label: str, names: tuple[str, ...] | list[str], allmatch: bool = False) -> list[str]:
    """clamd's result lines: `label: OK` or `label: NAME FOUND` (all names with allmatch)."""
    if not names:
        return [f"{label}: OK"]
    return [f"{label}: {name} FOUND" for name in (names if allmatch else names[:1])]
