"""The filter hop's pipelined client (`queue.filter_client`) against a real SMTP server on
127.0.0.1 that offers PIPELINING and answers each command as it reads it (the aiosmtpd
peers of test_delivery do not offer PIPELINING: they cover the one-command-at-a-time path).
"""

from __future__ import annotations

import asyncio

import pytest
from queue_support import eventually

from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import DELIVERED, FAILED, PENDING

MESSAGE = (b"Subject: pipelined\r\n\r\nline one\r\n.a leading dot\r\n..two dots\r\n"
           b".\r\nlast line\r\n")


class PipeliningFilter:
    """A line-at-a-time SMTP server with PIPELINING that records what it was sent.

    `mail_reply`/`data_reply`: replies for MAIL and the final dot (250 when None);
    `refuse`: recipients answered 550; `hang_up_after_354`: vanish mid-DATA;
    `close_after_each`: end the connection after every message (a reused one is dead).
    """

    def __init__(self, mail_reply=None, data_reply=None, refuse=(), hang_up_after_354=False,
                 close_after_each=False):
        self.mail_reply, self.data_reply = mail_reply, data_reply
        self.refuse = set(refuse)
        self.hang_up_after_354 = hang_up_after_354
        self.close_after_each = close_after_each
        self.messages: list[dict] = []
        self.commands: list[str] = []
        self.connections = 0
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _session(self, reader, writer) -> None:
        self.connections += 1
        writer.write(b"220 filter ESMTP\r\n")
        sender, recipients = None, []
        try:
            while line := await reader.readline():
                command = line.decode().strip()
                verb = command[:4].upper()
                self.commands.append(verb)
                if verb == "EHLO":
                    writer.write(b"250-filter\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                 b"250 SIZE 10000000\r\n")
                elif verb == "MAIL":
                    reply = self.mail_reply or "250 2.1.0 ok"
                    sender = command[10:].strip("<>") if reply[0] == "2" else None
                    recipients = []
                    writer.write(reply.encode() + b"\r\n")
                elif verb == "RCPT":
                    address = command[8:].split(">")[0].strip("<")
                    if sender is None or address in self.refuse:
                        writer.write(b"550 5.1.1 no such user\r\n" if sender is not None
                                     else b"503 5.5.1 MAIL first\r\n")
                    else:
                        recipients.append(address)
                        writer.write(b"250 2.1.5 ok\r\n")
                elif verb == "DATA":
                    if not recipients:
                        writer.write(b"554 5.5.1 no valid recipients\r\n")
                        continue
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    if self.hang_up_after_354:
                        return
                    body = bytearray()
                    while (data_line := await reader.readline()) != b".\r\n":
                        if not data_line:
                            return
                        body += data_line[1:] if data_line.startswith(b".") else data_line
                    self.messages.append({"sender": sender, "recipients": recipients,
                                          "content": bytes(body)})
                    writer.write((self.data_reply or "250 2.0.0 queued").encode() + b"\r\n")
                    sender, recipients = None, []
                    if self.close_after_each:
                        await writer.drain()
                        return
                elif verb == "RSET":
                    sender, recipients = None, []
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    return
                else:
                    writer.write(b"502 5.5.2 what\r\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


@pytest.fixture
async def pipelining_filter():
    started = []

    async def make(**kw) -> tuple[PipeliningFilter, str]:
        peer = PipeliningFilter(**kw)
        address = await peer.start()
        started.append(peer)
        return peer, address

    yield make
    for peer in started:
        await peer.stop()


def env(to=("alice@example.test", "bob@example.test")) -> Envelope:
    return Envelope(sender="sender@example.net", recipients=tuple(Recipient(a) for a in to),
                    received_via="smtp")


async def test_messages_share_one_pipelined_connection(make_queue, pipelining_filter):
    peer, address = await pipelining_filter()
    _app, queue = make_queue(filter_hop=address)
    for _ in range(3):
        qid = await queue.submit(env(), MESSAGE)
        await eventually(lambda qid=qid: qid not in queue.entries, what="delivery")
    assert peer.connections == 1
    assert [m["content"] for m in peer.messages] == [MESSAGE] * 3
    assert peer.messages[0]["recipients"] == ["alice@example.test", "bob@example.test"]
    # A finished transaction leaves the session clean: the next starts with MAIL.
    assert peer.commands == ["EHLO"] + ["MAIL", "RCPT", "RCPT", "DATA"] * 3


async def test_refused_recipient_fails_alone(make_queue, pipelining_filter):
    peer, address = await pipelining_filter(refuse={"bob@example.test"})
    _app, queue = make_queue(filter_hop=address)
    qid = await queue.submit(env(), MESSAGE)
    entry = queue.entries[qid]
    await eventually(lambda: qid not in queue.entries, what="attempt")
    assert peer.messages[0]["recipients"] == ["alice@example.test"]
    assert {r.address: (r.status, r.reply.code) for r in entry.recipients} == {
        "alice@example.test": (DELIVERED, 250), "bob@example.test": (FAILED, 550)}


async def test_refused_mail_defers_every_recipient_and_keeps_the_connection(
        make_queue, pipelining_filter):
    peer, address = await pipelining_filter(mail_reply="451 4.3.0 try later")
    _app, queue = make_queue(filter_hop=address,
                             toml="retry_initial = 3600\nretry_max = 3600")
    qid = await queue.submit(env(), MESSAGE)
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set(),
                     what="attempt")
    entry = queue.spool.load(qid)
    assert [r.status for r in entry.recipients] == [PENDING, PENDING]
    assert [r.reply.code for r in entry.recipients] == [451, 451]
    assert peer.messages == []
    # The refusals of the pipelined RCPTs and DATA were read: the connection is in step.
    host, port = address.split(":")
    cache, key = queue.deliverer.connections, f"[{host}]:{port}"
    idle = cache.take(key)
    assert idle is not None
    cache.give(key, *idle)
    # The next attempt on it resets the half-done transaction first.
    peer.mail_reply = None
    queue.flush()
    await eventually(lambda: qid not in queue.entries, what="delivery after flush")
    assert peer.connections == 1 and len(peer.messages) == 1
    assert peer.commands[-5:] == ["RSET", "MAIL", "RCPT", "RCPT", "DATA"]


async def test_hang_up_after_354_keeps_the_message(make_queue, pipelining_filter):
    _peer, address = await pipelining_filter(hang_up_after_354=True)
    _app, queue = make_queue(filter_hop=address,
                             toml="retry_initial = 3600\nretry_max = 3600\n"
                                  "command_timeout = 2")
    qid = await queue.submit(env(), MESSAGE)
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set(),
                     what="attempt")
    entry = queue.spool.load(qid)
    assert [r.status for r in entry.recipients] == [PENDING, PENDING]
    assert all(r.reply.code == 451 for r in entry.recipients)


async def test_dead_reused_connection_is_replaced_and_delivers_once(make_queue,
                                                                    pipelining_filter):
    peer, address = await pipelining_filter(close_after_each=True)
    _app, queue = make_queue(filter_hop=address)
    for _ in range(3):
        qid = await queue.submit(env(to=("alice@example.test",)), MESSAGE)
        await eventually(lambda qid=qid: qid not in queue.entries, what="delivery")
    assert len(peer.messages) == 3 and peer.connections == 3


async def test_a_5xx_after_the_data_fails_every_accepted_recipient(make_queue,
                                                                   pipelining_filter):
    _peer, address = await pipelining_filter(data_reply="554 5.7.1 rejected by policy")
    _app, queue = make_queue(filter_hop=address)
    qid = await queue.submit(env(), MESSAGE)
    entry = queue.entries[qid]
    await eventually(lambda: qid not in queue.entries, what="attempt")
    states = {r.address: r.status for r in entry.recipients}
    assert states == {"alice@example.test": FAILED, "bob@example.test": FAILED}
    assert DELIVERED not in states.values()
