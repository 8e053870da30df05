"""The queue's SMTP client for the filter hop: our own codec, pipelined, connections kept.

Theory of operation. The filter hop is one fixed SMTP server (`[filter] next_hop`) that
takes every message the MTA accepts, so its client is on the accept path's event loop for
every message. It is a thin asyncio loop around the sans-I/O `mailyard.smtp`
`ClientConnection` (as `lmtp_client` is): when the server offers PIPELINING (RFC 2920),
MAIL, every RCPT and DATA go out in one write and the message with its final dot in one
more — two writes and two round trips per message where the aiosmtplib client made five
(RSET, MAIL, RCPT, DATA, message; profiled: its sends were a third of the event loop's busy
time at the MTA's accept rate). Without PIPELINING it sends one command at a time.
Connections are kept in the `ConnectionCache` of `smtp_out` between messages. A transaction
that ended with its final dot leaves the session clean (RFC 5321 §4.1.1.4), so the next one
starts with MAIL; one that ended early is followed by an RSET first. A reused connection
that turns out dead fails before MAIL is accepted and is replaced by a new one at once.

Replies map to `Reply`s exactly as in `smtp_out`: a refused MAIL or a greeting or EHLO
refusal is every recipient's reply, a refused RCPT that recipient's, the answer to the
final dot every accepted recipient's. Anything the network or the peer does wrong (reset,
timeout, garbage) becomes a 4xx for every recipient without a reply: the queue retries.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailyard.envelope import Envelope
from mailyard.queue.lmtp_client import to_reply
from mailyard.queue.records import RecipientState, Reply
from mailyard.queue.smtp_out import (
    CONNECT_FAILED,
    ConnectionCache,
    Target,
    dsn_mail_params,
    dsn_rcpt_params,
)
from mailyard.smtp import NEED_DATA, Answer, ClientConnection, ProtocolError

READ_SIZE = 65536
_FAILURES = (OSError, TimeoutError, ProtocolError, asyncio.IncompleteReadError, UnicodeError,
             ValueError)


class FilterConnection:
    """One SMTP connection to the filter (`is_connected` and `close` for the cache)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float):
        self.client = ClientConnection()
        self.reader, self.writer, self.timeout = reader, writer, timeout
        self.broken = False
        self.clean = True           # no transaction open (the last one ended with its dot)

    @property
    def is_connected(self) -> bool:
        return not (self.broken or self.client.closed or self.writer.is_closing())

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):
            self.writer.close()

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> Answer:
        while True:
            answer = self.client.next_answer()
            if answer is not NEED_DATA:
                return answer  # type: ignore[return-value]
            async with asyncio.timeout(self.timeout):
                data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionResetError("connection closed by the filter")
            self.client.receive_data(data)


class Refused(Exception):
    """The greeting or EHLO was refused with a reply that stands for every recipient."""

    def __init__(self, answer: Answer):
        super().__init__(str(answer.reply))
        self.answer = answer


async def connect(target: Target, helo: str, connect_timeout: float,
                  command_timeout: float) -> FilterConnection:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), connect_timeout)
    conn = FilterConnection(reader, writer, command_timeout)
    try:
        greeting = await conn.answer()
        if greeting.code != 220:
            raise Refused(greeting)
        conn.write(conn.client.hello(helo))
        hello = await conn.answer()
        if not hello.ok:
            raise Refused(hello)
    except BaseException:
        conn.close()
        raise
    return conn


def _mail_params(envelope: Envelope, client: ClientConnection,
                 message: bytes) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if client.supports("8BITMIME") and (envelope.body.upper() == "8BITMIME"
                                        or not message[:65536].isascii()):
        params["BODY"] = "8BITMIME"
    if envelope.smtputf8 and client.supports("SMTPUTF8"):
        params["SMTPUTF8"] = None
    if client.supports("SIZE"):
        params["SIZE"] = str(len(message))
    if client.supports("DSN"):
        params.update(dsn_mail_params(envelope))
    return params


async def transaction(conn: FilterConnection, envelope: Envelope,
                      recipients: list[RecipientState], message: bytes, remote: str,
                      reused: bool) -> tuple[dict[str, Reply], bool, bool]:
    """One message over `conn`: (reply by recipient, whether the server took part — MAIL
    accepted or refused for good —, whether the connection may carry another message)."""
    client = conn.client
    replies: dict[str, Reply] = {}
    reached = False
    try:
        if not envelope.smtputf8 and not (envelope.sender.isascii() and all(
                r.address.isascii() for r in recipients)):
            raise UnicodeError("a non-ASCII address without SMTPUTF8")
        if reused and not conn.clean:
            # The last transaction ended early (a refusal): RSET first, on its own (the
            # codec's answer to RSET resets the DATA state a pipelined DATA just set up).
            conn.write(client.rset())
            if not (await conn.answer()).ok:
                return {}, False, False
        conn.clean = False
        dsn = client.supports("DSN")
        commands = [client.mail(envelope.sender, _mail_params(envelope, client, message))]
        commands += [client.rcpt(r.address, dict(dsn_rcpt_params(r)) if dsn else None)
                     for r in recipients]
        commands.append(client.data())
        pipelining = client.supports("PIPELINING")
        if pipelining:
            conn.write(b"".join(commands))
        mail_reply: Reply | None = None
        data_answer: Answer | None = None
        for command in commands:
            if not pipelining:
                conn.write(command)
            answer = await conn.answer()
            if answer.command == "MAIL":
                if not answer.ok:
                    mail_reply = to_reply(answer, remote)
                    reached = mail_reply.permanent
                    if not pipelining:           # the rest was never sent
                        return {r.address: mail_reply for r in recipients}, reached, False
                else:
                    reached = True
            elif answer.command == "RCPT" and not answer.ok and answer.recipient:
                replies[answer.recipient] = mail_reply or to_reply(answer, remote)
            elif answer.command == "DATA":
                data_answer = answer
        accepted = list(client.accepted_recipients)
        if data_answer is not None and data_answer.code == 354 and (
                mail_reply is not None or not accepted):
            # A server that says 354 with nothing to deliver: end it at once.
            conn.write(client.end_content())
            await conn.answer()
            accepted = []
        if mail_reply is not None:
            return {r.address: mail_reply for r in recipients}, reached, conn.is_connected
        if data_answer is None or data_answer.code != 354:
            reply = to_reply(data_answer, remote) if data_answer is not None else Reply(
                code=451, enhanced="4.3.0", text="no recipient accepted", remote=remote)
            for address in accepted:
                replies[address] = reply
            return replies, True, conn.is_connected
        conn.write(client.send_content(message) + client.end_content())
        await conn.writer.drain()
        reply = to_reply(await conn.answer(), remote)
        for address in accepted:
            replies[address] = reply
        conn.clean = True                       # RFC 5321 §4.1.1.4: the transaction is over
        return replies, True, conn.is_connected
    except _FAILURES as exc:
        reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                      text=f"{type(exc).__name__}: {exc}"[:300])
        for rcpt in recipients:
            replies.setdefault(rcpt.address, reply)
        return replies, reached, False


async def deliver_filter(target: Target, envelope: Envelope, recipients: list[RecipientState],
                         message: bytes, *, helo: str, connect_timeout: float,
                         command_timeout: float, cache: ConnectionCache | None = None
                         ) -> dict[str, Reply]:
    """Deliver to the filter hop, over an idle connection when there is one."""
    key = f"[{target.host}]:{target.port}"
    remote = target.name
    if cache is not None:
        idle = cache.take(key)
        if idle is not None:
            conn, _, uses = idle
            replies, reached, reusable = await transaction(conn, envelope, recipients,
                                                           message, remote, reused=True)
            if reusable:
                cache.give(key, conn, target, uses + 1)
            else:
                conn.close()
            if reached:
                cache.reused += 1
                return replies
    try:
        conn = await connect(target, helo, connect_timeout, command_timeout)
    except Refused as exc:
        reply = to_reply(exc.answer, remote)
        if not 400 <= reply.code < 600:
            reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                          text=f"unexpected reply {reply.line()}"[:300])
        return {r.address: reply for r in recipients}
    except _FAILURES as exc:
        reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                      text=f"{type(exc).__name__}: {exc}"[:300])
        return {r.address: reply for r in recipients}
    replies, _reached, reusable = await transaction(conn, envelope, recipients, message,
                                                    remote, reused=False)
    if reusable and cache is not None:
        cache.give(key, conn, target, 1)
    else:
        if reusable:
            with contextlib.suppress(Exception):
                conn.write(conn.client.quit())
        conn.close()
    return replies
