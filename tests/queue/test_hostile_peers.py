"""Next hops that misbehave — garbage, hang-ups mid-DATA, silence, DNS failure — and the
TLS a well-behaved one offers. Whatever the peer does, the message stays queued."""

from __future__ import annotations

import asyncio
import ssl

import pytest
from queue_support import Recorder, eventually

from mailyard.dns import DnsTemporaryError
from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import PENDING

USERS = ("alice@example.test", "bob@example.test")
BIG = b"Subject: big\r\n\r\n" + b"".join(
    b".%07d line that starts with a dot, and some more text to make it long\n" % i
    for i in range(60000))


class RawPeer:
    """A TCP server on 127.0.0.1 that plays a scripted (hostile) conversation."""

    def __init__(self, script):
        self.script = script
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader, writer):
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()
        await self.server.wait_closed()


async def garbage(reader, writer):
    writer.write(b"220 hi\r\n")
    await reader.readline()
    writer.write(b"\x00\xffthis is not SMTP at all\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)


async def hang_up_mid_data(reader, writer):
    writer.write(b"220 lmtp\r\n")
    await reader.readline()                                       # LHLO
    writer.write(b"250-lmtp\r\n250 PIPELINING\r\n")
    for _ in range(4):                                            # MAIL, 2 RCPT, DATA
        await reader.readline()
    writer.write(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    await writer.drain()
    await reader.read(1000)                                       # then vanish


async def silent(reader, writer):
    await asyncio.sleep(30)


def env(via="reinject", to=USERS):
    return Envelope(sender="sender@example.net", recipients=tuple(Recipient(a) for a in to),
                    received_via=via)


@pytest.mark.parametrize("script", [garbage, hang_up_mid_data, silent],
                         ids=["garbage", "hang-up-mid-data", "silent"])
async def test_misbehaving_lmtp_peer_keeps_the_message(make_queue, script):
    peer = RawPeer(script)
    address = await peer.start()
    try:
        _app, queue = make_queue(lmtp=address, users=USERS,
                                toml="retry_initial = 3600\nretry_max = 3600\n"
                                     "command_timeout = 0.5")
        qid = await queue.submit(env(), b"Subject: x\r\n\r\nbody\r\n")
        await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
        entry = queue.spool.load(qid)
        assert [r.status for r in entry.recipients] == [PENDING, PENDING]
        assert all(r.reply.code == 451 for r in entry.recipients)
    finally:
        await peer.stop()


async def test_garbage_from_remote_mx_defers(make_queue):
    peer = RawPeer(garbage)
    address = await peer.start()
    port = int(address.rsplit(":", 1)[1])
    try:
        _app, queue = make_queue(outbound_port=port, toml="retry_initial = 3600\n"
                                "retry_max = 3600", dns={
                                    ("example.net.", "MX"): ["10 mx.example.net."],
                                    ("mx.example.net.", "A"): ["127.0.0.1"]})
        qid = await queue.submit(env("internal", ("x@example.net",)), b"Subject: x\r\n\r\n.\r\n")
        await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
        assert queue.spool.load(qid).recipients[0].status == PENDING
    finally:
        await peer.stop()


async def test_dns_temporary_failure_defers(make_queue):
    _app, queue = make_queue(toml="retry_initial = 3600\nretry_max = 3600",
                            dns={("example.net.", "MX"): DnsTemporaryError})
    qid = await queue.submit(env("internal", ("x@example.net",)), b"Subject: x\r\n\r\n")
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
    rcpt = queue.spool.load(qid).recipients[0]
    assert rcpt.status == PENDING and rcpt.reply.enhanced == "4.4.3"


async def test_big_message_with_leading_dots_streams_intact_over_lmtp(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)
    await queue.submit(env(to=("alice@example.test",)), BIG)
    await eventually(lambda: lmtp.handler.messages, what="big delivery")
    assert lmtp.handler.messages[0]["content"] == BIG.replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n")


async def test_opportunistic_starttls_to_remote_mx(make_queue, peers, tls_certs):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_certs.cert_path, tls_certs.key_path)

    class TlsRecorder(Recorder):
        async def handle_DATA(self, server, session, envelope):
            self.tls = session.ssl is not None
            return await super().handle_DATA(server, session, envelope)

    from aiosmtpd.controller import Controller
    from harness import free_port

    handler = TlsRecorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        _app, queue = make_queue(outbound_port=port, dns={
            ("example.net.", "MX"): ["10 mx.example.net."],
            ("mx.example.net.", "A"): ["127.0.0.1"]})
        await queue.submit(env("internal", ("x@example.net",)), b"Subject: tls\r\n\r\nhi\r\n")
        await eventually(lambda: handler.messages, what="delivery over TLS")
        assert handler.tls is True
    finally:
        controller.stop()


@pytest.mark.parametrize("mx_name, delivered", [("localhost", True),
                                                ("mx.example.net", False)])
async def test_tls_verify_checks_the_mx_name(make_queue, tls_certs, mx_name, delivered):
    """With [queue] tls_verify the certificate must match the MX host name (the trustme
    certificate names localhost, not mx.example.net): else the message waits."""
    from aiosmtpd.controller import Controller
    from harness import free_port

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_certs.cert_path, tls_certs.key_path)
    handler = Recorder()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context)
    controller.start()
    try:
        _app, queue = make_queue(outbound_port=port, toml=(
            f'tls_verify = true\ntls_ca_file = "{tls_certs.ca_path}"\n'
            "retry_initial = 3600\nretry_max = 3600"), dns={
            ("example.net.", "MX"): [f"10 {mx_name}."],
            (f"{mx_name}.", "A"): ["127.0.0.1"]})
        qid = await queue.submit(env("internal", ("x@example.net",)), b"Subject: v\r\n\r\n")
        await eventually(lambda: qid not in queue.entries or (
            queue.entries[qid].attempts == 1 and queue.idle.is_set()))
        assert bool(handler.messages) is delivered
        if not delivered:
            assert queue.spool.load(qid).recipients[0].status == PENDING
    finally:
        controller.stop()


async def test_tls_verify_refuses_a_server_without_starttls(make_queue, peers):
    mx = peers(Recorder())
    _app, queue = make_queue(outbound_port=mx.port, toml=(
        "tls_verify = true\nretry_initial = 3600\nretry_max = 3600"), dns={
        ("example.net.", "MX"): ["10 localhost."], ("localhost.", "A"): ["127.0.0.1"]})
    qid = await queue.submit(env("internal", ("x@example.net",)), b"Subject: v\r\n\r\n")
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
    assert mx.handler.messages == []
    rcpt = queue.spool.load(qid).recipients[0]
    assert rcpt.status == PENDING and "STARTTLS" in rcpt.reply.text
