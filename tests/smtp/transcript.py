"""Drive the sans-I/O server codec with a permissive in-memory peer (no sockets here).

`run(client_bytes_or_packets, **ServerConnection_kwargs) -> Transcript`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailyard.smtp import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    Vrfy,
    replies,
)


@dataclass
class Transcript:
    """What the server said and saw for a given client input."""

    output: bytes = b""
    events: list = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    refused: list = field(default_factory=list)     # DataEnd errors

    @property
    def codes(self) -> list[int]:
        out = []
        for line in self.output.split(b"\r\n"):
            if len(line) >= 4 and line[3:4] == b" ":
                out.append(int(line[:3]))
            elif len(line) == 3:
                out.append(int(line))
        return out


def respond(conn: ServerConnection, event, transcript: Transcript, current: list) -> bytes:
    """An accept-everything server policy."""
    if isinstance(event, (Ehlo, Lhlo)):
        return conn.reply(250, None, ["test.example", "PIPELINING", "8BITMIME", "SMTPUTF8",
                                      "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH PLAIN"])
    if isinstance(event, Helo):
        return conn.reply(250, None, "test.example")
    if isinstance(event, Mail):
        return conn.respond(replies.SENDER_OK)
    if isinstance(event, Rcpt):
        if event.address.startswith("refuse"):
            return conn.respond(replies.MAILBOX_UNKNOWN)
        return conn.respond(replies.RECIPIENT_OK)
    if isinstance(event, Data):
        current.clear()
        return conn.respond(replies.START_DATA)
    if isinstance(event, DataEnd):
        count = len(conn.recipients) if conn.lmtp else 1
        if event.error is not None:
            transcript.refused.append(event.error)
            return b"".join(conn.respond(event.error) for _ in range(count))
        transcript.messages.append(b"".join(current))
        return b"".join(conn.respond(replies.OK) for _ in range(count))
    if isinstance(event, (Rset, Noop)):
        return conn.respond(replies.OK)
    if isinstance(event, Quit):
        return conn.respond(replies.CLOSING)
    if isinstance(event, StartTls):
        return conn.respond(replies.READY_TLS)
    if isinstance(event, Auth):
        if event.initial is None:
            return conn.respond(replies.AUTH_CONTINUE)
        return conn.respond(replies.AUTH_OK)
    if isinstance(event, AuthResponse):
        if event.cancelled:
            return conn.respond(replies.AUTH_CANCELLED)
        return conn.respond(replies.AUTH_OK)
    if isinstance(event, (Vrfy, Expn)):
        return conn.respond(replies.VRFY_CANNOT)
    if isinstance(event, Help):
        return conn.respond(replies.HELP)
    if isinstance(event, CommandError):
        return conn.respond(event.reply)
    raise AssertionError(f"unexpected event {event!r}")


def run(data: bytes | list[bytes], conn: ServerConnection | None = None,
        **kwargs) -> Transcript:
    """Feed `data` (one packet or a list of packets) and answer every event."""
    conn = conn or ServerConnection(**kwargs)
    transcript = Transcript()
    current: list[bytes] = []
    packets = [data] if isinstance(data, bytes) else list(data)
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            if not packets:
                break
            conn.receive_data(packets.pop(0))
            continue
        assert event is not PAUSED
        transcript.events.append(event)
        if isinstance(event, DataChunk):
            current.append(event.data)
            continue
        transcript.output += respond(conn, event, transcript, current)
    transcript.conn = conn
    return transcript
