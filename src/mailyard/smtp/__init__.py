"""The SMTP and LMTP wire protocol, sans-I/O (RFC 5321, RFC 2033, and ESMTP extensions).

- `ServerConnection` (server.py): bytes in → typed events (events.py) out; `reply()` → bytes.
- `ClientConnection` (client.py): commands → bytes; server bytes → labelled `Answer`s.
- addresses and ESMTP parameters (address.py), DATA transparency (data.py), named reply
  constants (replies.py).

Server loop, in short:

    conn = ServerConnection(lmtp=False, max_message_size=10_000_000)
    write(conn.reply(220, None, "mx.example ESMTP"))
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            flush(); conn.receive_data(await read())     # b"" → the client went away
        elif isinstance(event, Mail): write(conn.respond(replies.SENDER_OK))
        elif isinstance(event, DataChunk): spool.write(event.data)
        elif isinstance(event, CommandError): write(conn.respond(event.reply))
        ...
"""

from mailyard.smtp import replies
from mailyard.smtp.address import (
    AddressError,
    Mailbox,
    Path,
    parse_mailbox,
    parse_params,
    parse_path,
    xtext_decode,
    xtext_encode,
)
from mailyard.smtp.client import Answer, ClientConnection, ProtocolError
from mailyard.smtp.data import DataDecoder, DataEncoder, dot_stuff
from mailyard.smtp.events import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from mailyard.smtp.replies import Reply, format_reply
from mailyard.smtp.server import ServerConnection

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AddressError",
    "Answer",
    "Auth",
    "AuthResponse",
    "ClientConnection",
    "CommandError",
    "Data",
    "DataChunk",
    "DataDecoder",
    "DataEncoder",
    "DataEnd",
    "Ehlo",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "Lhlo",
    "Mail",
    "Mailbox",
    "Noop",
    "Path",
    "ProtocolError",
    "Quit",
    "Rcpt",
    "Reply",
    "Rset",
    "ServerConnection",
    "StartTls",
    "Vrfy",
    "dot_stuff",
    "format_reply",
    "parse_mailbox",
    "parse_params",
    "parse_path",
    "replies",
    "xtext_decode",
    "xtext_encode",
]
