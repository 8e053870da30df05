"""Typed events the server codec hands out, one per client command or piece of DATA.

Every command event expects exactly one reply (`ServerConnection.reply`); `DataChunk` expects
none; `DataEnd` expects one reply in SMTP and one per accepted recipient in LMTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailyard.smtp.address import Path
from mailyard.smtp.replies import Reply


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")   # feed more bytes with receive_data()
PAUSED = _Sentinel("PAUSED")         # reply to the pending event first


class Event:
    """Base class of every codec event."""

    expects_reply = True


@dataclass(frozen=True)
class Helo(Event):
    domain: str


@dataclass(frozen=True)
class Ehlo(Event):
    domain: str


@dataclass(frozen=True)
class Lhlo(Event):
    domain: str


@dataclass(frozen=True)
class Mail(Event):
    """MAIL FROM. `address` is "" for the null sender; params keys are upper-case."""

    path: Path
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.path.address


@dataclass(frozen=True)
class Rcpt(Event):
    """RCPT TO. `address` is "postmaster" for a bare <Postmaster>."""

    path: Path
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.path.address


@dataclass(frozen=True)
class Data(Event):
    """The DATA command: reply 354 (replies.START_DATA) to receive the content."""


@dataclass(frozen=True)
class DataChunk(Event):
    """A piece of message content, dot-unstuffed, CRLF line endings."""

    data: bytes
    expects_reply = False


@dataclass(frozen=True)
class DataEnd(Event):
    """The end of the content. `size` counts unstuffed bytes; `error` is set when the codec
    refuses the content (size limit, bare newline): reply with it (once per recipient in
    LMTP) and discard what was received."""

    size: int
    error: Reply | None = None


@dataclass(frozen=True)
class Rset(Event):
    pass


@dataclass(frozen=True)
class Noop(Event):
    pass


@dataclass(frozen=True)
class Quit(Event):
    pass


@dataclass(frozen=True)
class StartTls(Event):
    """Reply 220 to begin the handshake; the codec then discards everything buffered
    (RFC 3207 §4.2, CVE-2011-0411) and forgets the session (state back to greeting)."""


@dataclass(frozen=True)
class Auth(Event):
    """AUTH mechanism [initial-response]. `initial` is None when absent, "" for "="."""

    mechanism: str
    initial: str | None = None


@dataclass(frozen=True)
class AuthResponse(Event):
    """A client line in an AUTH exchange (after a 334). `cancelled` for "*"."""

    data: str
    cancelled: bool = False


@dataclass(frozen=True)
class Vrfy(Event):
    argument: str


@dataclass(frozen=True)
class Expn(Event):
    argument: str


@dataclass(frozen=True)
class Help(Event):
    argument: str = ""


@dataclass(frozen=True)
class CommandError(Event):
    """Bad input the codec refused by itself (syntax, sequence, line length, unknown
    command). Reply with `reply` (or a variant); the server counts these for its error
    limit. `command` is the verb, upper-cased, when one was recognised."""

    reply: Reply
    command: str = ""
