"""The LMTP client (RFC 2033) the queue uses for final delivery to local mailboxes.

Theory of operation: a thin asyncio loop around the sans-I/O `mailyard.smtp`
`ClientConnection(lmtp=True)`. One connection per delivery attempt to the `lmtp` listener
(HOST:PORT or unix:/path): LHLO, then MAIL FROM, one RCPT TO per recipient and DATA —
pipelined in one write when the server offers PIPELINING (RFC 2920) — then the message
streamed from the spool file through the codec's encoder (dot-stuffing and CRLF line ends,
RFC 5321 §4.5.2), never held in memory whole. After the final dot an LMTP server answers once
per accepted recipient, in RCPT order (RFC 2033 §4.2); the codec labels each answer with its
recipient. That is what lets one recipient be delivered while another is deferred (over
quota) or refused, and the queue records each outcome.

Anything the connection does wrong (refused, reset, timeout, garbage instead of a reply)
becomes a 4xx for every recipient not yet answered: nothing is lost, the queue retries.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailyard.config import parse_hostport
from mailyard.envelope import Envelope
from mailyard.queue.records import RecipientState, Reply
from mailyard.queue.smtp_out import CONNECT_FAILED, dsn_mail_params, dsn_rcpt_params
from mailyard.smtp import NEED_DATA, Answer, ClientConnection, ProtocolError

CHUNK = 65536


def to_reply(answer: Answer, remote: str) -> Reply:
    r = answer.reply
    return Reply(code=r.code, text=" ".join(" ".join(r.lines).split()),
                 enhanced=r.enhanced or "", remote=remote)


class _Session:
    """The socket half: write the codec's bytes, read until it has an answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float):
        self.client = ClientConnection(lmtp=True)
        self.reader, self.writer, self.timeout = reader, writer, timeout

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> Answer:
        while True:
            answer = self.client.next_answer()
            if answer is not NEED_DATA:
                return answer  # type: ignore[return-value]
            data = await asyncio.wait_for(self.reader.read(CHUNK), self.timeout)
            if not data:
                raise ConnectionResetError("connection closed by the LMTP server")
            self.client.receive_data(data)

    async def stream(self, source: bytes | tuple[Path, int, int]) -> None:
        if isinstance(source, bytes):
            for start in range(0, len(source), CHUNK):
                await self.send(self.client.send_content(source[start:start + CHUNK]))
            await self.send(self.client.end_content())
            return
        # Spool files are read in chunks straight from the page cache they were just
        # written to; the codec's encoder keeps its state across chunk boundaries.
        path, offset, left = source
        with open(path, "rb") as f:  # noqa: ASYNC230
            f.seek(offset)
            while left and (chunk := f.read(min(CHUNK, left))):
                left -= len(chunk)
                await self.send(self.client.send_content(chunk))
        await self.send(self.client.end_content())


async def _open(address: str, timeout: float):
    host, port = parse_hostport(address)
    if host.startswith("unix:"):
        return await asyncio.wait_for(asyncio.open_unix_connection(host[5:]), timeout)
    return await asyncio.wait_for(asyncio.open_connection(host, port), timeout)


def _mail_params(envelope: Envelope, client: ClientConnection) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if client.supports("8BITMIME") and envelope.body.upper() == "8BITMIME":
        params["BODY"] = "8BITMIME"
    if client.supports("SMTPUTF8") and envelope.smtputf8:
        params["SMTPUTF8"] = None
    if client.supports("DSN"):
        params.update(dsn_mail_params(envelope))
    return params


def _rcpt_params(rcpt: RecipientState, client: ClientConnection) -> dict[str, str | None]:
    return dict(dsn_rcpt_params(rcpt)) if client.supports("DSN") else {}


async def lmtp_deliver(address: str, envelope: Envelope, recipients: list[RecipientState],
                       message: bytes | tuple[Path, int, int], *, helo: str,
                       connect_timeout: float, command_timeout: float) -> dict[str, Reply]:
    """Deliver one spooled message (`message`: its bytes, or its queue file, offset and
    length) to `recipients`; a Reply for every one of them."""
    replies: dict[str, Reply] = {}
    remote = address
    writer = None
    try:
        reader, writer = await _open(address, connect_timeout)
        session = _Session(reader, writer, command_timeout)
        client = session.client
        greeting = await session.answer()
        if greeting.code != 220:
            raise ProtocolError(f"greeting {greeting.reply}")
        await session.send(client.hello(helo))
        hello = await session.answer()
        if not hello.ok:
            return {r.address: to_reply(hello, remote) for r in recipients}
        commands = [client.mail(envelope.sender, _mail_params(envelope, client))]
        commands += [client.rcpt(r.address, _rcpt_params(r, client)) for r in recipients]
        commands.append(client.data())
        pipelining = client.supports("PIPELINING")
        if pipelining:
            await session.send(b"".join(commands))
        mail_reply: Reply | None = None
        data_answer: Answer | None = None
        for command in commands:
            if not pipelining:
                await session.send(command)
            answer = await session.answer()
            if answer.command == "MAIL" and not answer.ok:
                mail_reply = to_reply(answer, remote)
                if not pipelining:
                    break
            elif answer.command == "RCPT" and not answer.ok and answer.recipient:
                replies[answer.recipient] = mail_reply or to_reply(answer, remote)
            elif answer.command == "DATA":
                data_answer = answer
        if mail_reply is not None:
            return {r.address: mail_reply for r in recipients}
        accepted = list(client.accepted_recipients)
        if data_answer is None or data_answer.code != 354:
            reply = (to_reply(data_answer, remote) if data_answer is not None else
                     Reply(code=451, enhanced="4.3.0", text="no recipient accepted",
                           remote=remote))
            for rcpt in accepted:
                replies[rcpt] = reply
            return replies
        if not accepted:
            # A server that says 354 with no valid recipient: end it without waiting.
            await session.send(client.end_content())
            return replies
        await session.stream(message)
        # RFC 2033 §4.2: one reply per accepted recipient, in order.
        for _ in accepted:
            answer = await session.answer()
            if answer.recipient:
                replies[answer.recipient] = to_reply(answer, remote)
        try:
            await session.send(client.quit())
            await session.answer()
        except (OSError, ProtocolError, TimeoutError):
            pass
        return replies
    except (OSError, ProtocolError, TimeoutError, UnicodeError, ValueError) as exc:
        reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                      text=f"LMTP {type(exc).__name__}: {exc}"[:300])
        for rcpt in recipients:
            replies.setdefault(rcpt.address, reply)
        return replies
    finally:
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
