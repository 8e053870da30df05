"""The LMTP listener (`[listen] lmtp`, RFC 2033) around the shared sans-I/O codec.

Theory of operation: one `LmtpSession` per connection feeds the socket's bytes to
`mailyard.smtp.ServerConnection(lmtp=True)` and answers its events. The codec owns syntax,
sequencing and DATA transparency; this module owns the decisions. RCPT asks the delivery
agent (`DeliveryAgent.check_recipient`): unknown users are refused there with 550 5.1.1, a
mailbox already over quota with 552 5.2.2 (or 452). DATA content is collected in memory (the
codec enforces `[smtp] max_message_size`); at its end the agent delivers each accepted
recipient in RCPT order and the session writes one reply per recipient (RFC 2033 §4.2), each
as soon as that recipient is done. Only clients in `[smtp] trusted_networks` (and Unix
socket peers) may connect: LMTP is the last, trusting hop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time

from mailyard.config.loader import is_trusted
from mailyard.delivery.agent import DeliveryAgent, Target
from mailyard.envelope import Envelope
from mailyard.log import event, get_logger
from mailyard.server.listen import Listener, serve_stream
from mailyard.smtp import (
    NEED_DATA,
    Auth,
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
from mailyard.smtp.replies import Reply

log = get_logger("delivery")

COMMAND_TIMEOUT = 300.0
MAX_ERRORS = 20
NOT_TRUSTED = Reply(554, "5.7.1", "LMTP is only for trusted networks")
BUSY = Reply(421, "4.3.2", "Too many LMTP sessions, try again later")

_session_ids = itertools.count(1)


class LmtpSession:
    """One LMTP client connection (see the module docstring)."""

    def __init__(self, agent: DeliveryAgent, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.agent = agent
        self.settings = agent.settings
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        self.tcp = isinstance(peer, tuple)
        self.conn = ServerConnection(lmtp=True,
                                     max_message_size=self.settings.smtp.max_message_size)
        self.id = f"L{os.getpid():x}{next(_session_ids):x}"
        self.sender = ""
        self.mail_params: dict = {}
        self.targets: list[Target] = []
        self.content = bytearray()
        self.errors = 0
        self.delivered = 0

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def run(self) -> None:
        hostname = self.settings.server.hostname
        if self.tcp and not is_trusted(self.settings, self.client_ip):
            self.write(self.conn.respond(NOT_TRUSTED))
            await self.writer.drain()
            return
        self.write(self.conn.reply(220, None, f"{hostname} mailyard LMTP ready"))
        try:
            while True:
                ev = self.conn.next_event()
                if ev is NEED_DATA:
                    await self.writer.drain()
                    data = await asyncio.wait_for(self.reader.read(65536), COMMAND_TIMEOUT)
                    if not data:
                        return
                    self.conn.receive_data(data)
                elif isinstance(ev, DataChunk):
                    self.content += ev.data
                elif isinstance(ev, DataEnd):
                    await self.end_of_data(ev)
                elif isinstance(ev, Rcpt):
                    self.write(await self.recipient(ev))
                elif isinstance(ev, Quit):
                    self.write(self.conn.respond(replies.CLOSING))
                    await self.writer.drain()
                    return
                else:
                    self.write(self.answer(ev))
                    if self.conn.state == "closed":
                        await self.writer.drain()
                        return
        except TimeoutError:
            self.write(self.conn.respond(replies.TIMEOUT))
            await self.writer.drain()
        finally:
            event(log, "lmtp session end", session=self.id, client=self.client_ip,
                  delivered=self.delivered)

    def answer(self, ev) -> bytes:
        """The reply to one command event (everything but DATA's end)."""
        conn = self.conn
        hostname = self.settings.server.hostname
        if isinstance(ev, Lhlo):
            return conn.reply(250, None, [hostname, "PIPELINING", "ENHANCEDSTATUSCODES",
                                          "8BITMIME", "SMTPUTF8",
                                          f"SIZE {self.settings.smtp.max_message_size}"])
        if isinstance(ev, Mail):
            self.sender, self.mail_params, self.targets = ev.address, dict(ev.params), []
            return conn.respond(replies.SENDER_OK)
        if isinstance(ev, Data):
            self.content = bytearray()
            return conn.respond(replies.START_DATA)
        if isinstance(ev, Rset):
            self.targets = []
            return conn.respond(replies.RESET_OK)
        if isinstance(ev, Noop):
            return conn.respond(replies.NOOP_OK)
        if isinstance(ev, Vrfy):
            return conn.respond(replies.VRFY_CANNOT)
        if isinstance(ev, Help):
            return conn.respond(replies.HELP)
        if isinstance(ev, CommandError):
            self.errors += 1
            if self.errors > MAX_ERRORS:
                return conn.respond(replies.TOO_MANY_ERRORS)
            return conn.respond(ev.reply)
        if isinstance(ev, (Helo, Ehlo, StartTls, Auth, Expn)):
            return conn.respond(replies.NOT_IMPLEMENTED)
        return conn.respond(replies.NOT_IMPLEMENTED)

    async def recipient(self, ev: Rcpt) -> bytes:
        address = ev.address
        if address.lower() == "postmaster":  # RFC 5321 §4.5.1: bare <Postmaster>
            address = f"postmaster@{self.settings.server.hostname}"
        try:
            # A thread: the account lookup and a quota recount may touch the disk.
            checked = await asyncio.to_thread(self.agent.check_recipient, address,
                                              ev.params.get("ORCPT"))
        except Exception:
            log.exception("recipient lookup failed for %s", address)
            checked = replies.LOCAL_ERROR
        if isinstance(checked, Reply):
            event(log, "recipient refused", session=self.id, recipient=address,
                  status=f"{checked.code} {checked.enhanced}")
            return self.conn.respond(checked)
        self.targets.append(checked)
        return self.conn.respond(replies.RECIPIENT_OK)

    async def end_of_data(self, ev: DataEnd) -> None:
        """RFC 2033 §4.2: one reply per accepted recipient, in RCPT order."""
        targets, self.targets = self.targets, []
        message, self.content = bytes(self.content), bytearray()
        if ev.error is not None:
            for _ in targets:
                self.write(self.conn.respond(ev.error))
            return
        envelope = Envelope(
            sender=self.sender, recipients=(), received_via="lmtp", client_ip=self.client_ip,
            client_helo=self.conn.hello or "", body=(self.mail_params.get("BODY") or "7BIT")
            .upper(), smtputf8="SMTPUTF8" in self.mail_params, received_at=time.time())
        for target in targets:
            result = await self.agent.deliver(envelope, target, message, self.id)
            if result.reply.code < 300:
                self.delivered += 1
            self.write(self.conn.respond(result.reply))
            await self.writer.drain()


async def start(app, service: str, address: str) -> Listener:
    """`[listen] lmtp`: serve LMTP on `address` (HOST:PORT or unix:/path)."""
    agent = app.component("delivery", DeliveryAgent)
    active = {"sessions": 0}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if active["sessions"] >= app.settings.delivery.max_connections:
            writer.write(ServerConnection(lmtp=True).respond(BUSY))
            await writer.drain()
            return
        active["sessions"] += 1
        try:
            await LmtpSession(agent, reader, writer).run()
        finally:
            active["sessions"] -= 1

    return await serve_stream(app, service, address, handle)
