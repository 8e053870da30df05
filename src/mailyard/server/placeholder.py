"""A polite refusal for a service whose package has not landed yet.

It accepts, says in the service's own protocol that it is not available, and closes, so a
client gets a clear answer instead of a connection refused or a hang.
"""

from __future__ import annotations

import asyncio

from mailyard.server.listen import Listener, serve_stream

_REFUSALS = {
    "smtp": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "submission": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "submissions": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "reinject": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "filter": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "lmtp": b"421 4.3.2 mailyard: this service is not available yet\r\n",
    "imap": b"* BYE mailyard: this service is not available yet\r\n",
    "imaps": b"* BYE mailyard: this service is not available yet\r\n",
    "pop3": b"-ERR mailyard: this service is not available yet\r\n",
    "pop3s": b"-ERR mailyard: this service is not available yet\r\n",
    "managesieve": b'BYE "mailyard: this service is not available yet"\r\n',
}


async def start(app, service: str, address: str) -> Listener:
    message = _REFUSALS.get(service, b"")
    tls = service in ("submissions", "imaps", "pop3s")

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(message)
        await writer.drain()

    return await serve_stream(app, service, address, refuse,
                              ssl=app.tls_server_context() if tls else None,
                              placeholder=True)
