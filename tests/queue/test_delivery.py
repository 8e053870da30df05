"""The queue delivering over real sockets to real aiosmtpd peers on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy

from harness import free_port
from queue_support import Recorder, eventually

from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import DELIVERED, FAILED, PENDING

MESSAGE = (b"From: Sender <sender@example.net>\r\nTo: alice@example.test\r\n"
           b"Subject: hello\r\nMessage-ID: <m1@example.net>\r\n\r\n"
           b"Hello Alice.\r\n.leading dot survives\r\n")


def envelope(sender="sender@example.net", to=("alice@example.test",), via="smtp",
             **kw) -> Envelope:
    rcpts = tuple(r if isinstance(r, Recipient) else Recipient(r) for r in to)
    return Envelope(sender=sender, recipients=rcpts, received_via=via, **kw)


async def receive(queue, env: Envelope, message: bytes = MESSAGE) -> str:
    incoming = await queue.receive(env)
    for i in range(0, len(message), 7):         # many small writes, like DATA chunks
        incoming.write(message[i:i + 7])
    return await incoming.commit()


def parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


# -- the filter hop ---------------------------------------------------------------------

async def test_filter_hop_gets_all_recipients_in_one_transaction(make_queue, peers):
    filt = peers(Recorder())
    _app, queue = make_queue(filter_hop=filt.address)
    qid = await receive(queue, envelope(to=("alice@example.test", "bob@example.test")))
    await eventually(lambda: filt.handler.messages and qid not in queue.entries,
                     what="filter delivery")
    (msg,) = filt.handler.messages
    assert msg["recipients"] == ["alice@example.test", "bob@example.test"]
    assert msg["sender"] == "sender@example.net"
    assert msg["content"].replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    assert not queue.spool.exists(qid)


async def test_filter_hop_4xx_then_250_is_retried(make_queue, peers):
    filt = peers(Recorder(data_replies=["451 4.3.0 scanner busy"]))
    _app, queue = make_queue(filter_hop=filt.address)
    qid = await receive(queue, envelope())
    await eventually(lambda: filt.handler.messages, what="delivery after retry")
    assert filt.handler.transactions == 2
    await eventually(lambda: not queue.spool.exists(qid), what="removal")


async def test_filter_down_defers_then_flush_delivers(make_queue, peers):
    port = free_port()
    _app, queue = make_queue(filter_hop=f"127.0.0.1:{port}",
                            toml="retry_initial = 3600\nretry_max = 3600")
    qid = await receive(queue, envelope())
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set(),
                     what="first failed attempt")
    entry = queue.spool.load(qid)
    assert entry.recipients[0].status == PENDING
    assert entry.recipients[0].reply.code == 451
    assert entry.last_error
    filt = peers(Recorder(), port=port)
    queue.spool.notify("flush")              # what `mailyard queue flush` does
    await eventually(lambda: filt.handler.messages, what="delivery after flush")
    await eventually(lambda: not queue.spool.exists(qid), what="removal")


async def test_hold_stops_attempts_and_release_resumes(make_queue, peers):
    port = free_port()
    _app, queue = make_queue(filter_hop=f"127.0.0.1:{port}",
                            toml="retry_initial = 3600\nretry_max = 3600")
    qid = await receive(queue, envelope())
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
    assert queue.spool.set_hold(qid, True)
    filt = peers(Recorder(), port=port)
    queue.spool.notify("flush")
    await eventually(lambda: queue.entries[qid].held, what="hold noticed")
    await eventually(lambda: queue.idle.is_set())
    assert filt.handler.messages == []
    assert queue.spool.set_hold(qid, False)
    await eventually(lambda: filt.handler.messages, what="delivery after release")


# -- final delivery: LMTP --------------------------------------------------------------

USERS = ("alice@example.test", "bob@example.test", "carol@example.test")


async def test_lmtp_per_recipient_status(make_queue, peers):
    """alice 250, bob 452 then 250, carol 550: alice gets it once, bob on retry, carol's
    failure goes back to the sender as a DSN via the remote MX."""
    lmtp = peers(Recorder(lmtp_replies={
        "bob@example.test": ["452 4.2.2 mailbox full"],
        "carol@example.test": ["550 5.2.1 mailbox disabled"]}), lmtp=True)
    mx = peers(Recorder())
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS, outbound_port=mx.port, dns={
        ("example.net.", "MX"): ["10 mx.example.net."],
        ("mx.example.net.", "A"): ["127.0.0.1"]})
    qid = await receive(queue, envelope(to=USERS, via="reinject"))
    await eventually(lambda: not queue.spool.exists(qid), what="entry done")
    assert len(lmtp.handler.to("alice@example.test")) == 1
    assert len(lmtp.handler.to("bob@example.test")) == 1
    assert lmtp.handler.to("carol@example.test") == []
    assert lmtp.handler.messages[1]["recipients"] == ["bob@example.test"]
    await eventually(lambda: mx.handler.messages, what="the DSN")
    (bounce,) = mx.handler.messages
    assert bounce["sender"] == "" and bounce["recipients"] == ["sender@example.net"]
    report = parse(bounce["content"])
    assert report.get_content_type() == "multipart/report"
    status = report.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    rcpt = status.get_payload()[1]
    assert rcpt["Final-Recipient"] == "rfc822; carol@example.test"
    assert rcpt["Status"] == "5.2.1"
    assert "550 5.2.1 mailbox disabled" in rcpt["Diagnostic-Code"]


async def test_unknown_local_recipient_bounces_without_lmtp(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)
    qid = await receive(queue, envelope(sender="alice@example.test",
                                        to=("nobody@example.test",), via="reinject"))
    await eventually(lambda: lmtp.handler.to("alice@example.test"), what="bounce to alice")
    assert lmtp.handler.to("nobody@example.test") == []
    report = parse(lmtp.handler.to("alice@example.test")[0]["content"])
    assert "5.1.1" in report.get_payload()[1].as_string()
    await eventually(lambda: not queue.spool.exists(qid))


async def test_alias_expands_to_local_and_remote(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    mx = peers(Recorder())
    app, queue = make_queue(lmtp=lmtp.address, users=USERS, outbound_port=mx.port, dns={
        ("example.net.", "MX"): ["10 mx.example.net."],
        ("mx.example.net.", "A"): ["127.0.0.1"]})
    app.accounts.add_alias("team@example.test", ["alice@example.test", "ext@example.net"])
    await receive(queue, envelope(to=("team@example.test", "bob+lists@example.test"),
                                  via="reinject"))
    await eventually(lambda: lmtp.handler.messages and mx.handler.messages)
    assert lmtp.handler.messages[0]["recipients"] == ["bob+lists@example.test",
                                                      "alice@example.test"]
    assert mx.handler.messages[0]["recipients"] == ["ext@example.net"]


async def test_null_sender_is_never_bounced(make_queue, peers):
    lmtp = peers(Recorder(lmtp_replies={"carol@example.test": ["550 5.2.1 disabled"]}),
                 lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)
    qid = await receive(queue, envelope(sender="", to=("carol@example.test",),
                                        via="reinject"))
    await eventually(lambda: not queue.spool.exists(qid) and queue.idle.is_set())
    assert queue.entries == {}
    assert lmtp.handler.messages == []


async def test_notify_never_suppresses_the_bounce(make_queue, peers):
    lmtp = peers(Recorder(lmtp_replies={"carol@example.test": ["550 5.2.1 disabled"]}),
                 lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)
    qid = await receive(queue, envelope(
        sender="alice@example.test", via="reinject",
        to=(Recipient("carol@example.test", notify=("NEVER",)),)))
    await eventually(lambda: not queue.spool.exists(qid) and queue.idle.is_set())
    assert lmtp.handler.messages == []


async def test_notify_success_gets_a_delivered_dsn(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)
    await receive(queue, envelope(
        sender="alice@example.test", via="reinject", dsn_envid="ENV-42",
        to=(Recipient("bob@example.test", notify=("SUCCESS",),
                      orcpt="rfc822;bob@example.test"),)))
    await eventually(lambda: lmtp.handler.to("alice@example.test"), what="success DSN")
    report = parse(lmtp.handler.to("alice@example.test")[0]["content"])
    status = report.get_payload()[1]
    assert status.get_payload()[0]["Original-Envelope-Id"] == "ENV-42"
    assert status.get_payload()[1]["Action"] == "delivered"


async def test_lifetime_expiry_bounces_with_4_4_7(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    app, queue = make_queue(lmtp=lmtp.address, users=USERS,
                            toml="max_lifetime = 0.5\ndelay_warning = 0")
    # Remote recipient whose MX is down (nothing listens on the outbound port).
    app2_dns = app.dns
    app2_dns.add("example.org.", "MX", ["10 mx.example.org."])
    app2_dns.add("mx.example.org.", "A", ["127.0.0.1"])
    qid = await receive(queue, envelope(sender="alice@example.test", via="reinject",
                                        to=("someone@example.org",)))
    await eventually(lambda: lmtp.handler.to("alice@example.test"), what="expiry bounce")
    report = parse(lmtp.handler.to("alice@example.test")[0]["content"])
    rcpt = report.get_payload()[1].get_payload()[1]
    assert rcpt["Status"] == "4.4.7"
    assert rcpt["Action"] == "failed"
    await eventually(lambda: not queue.spool.exists(qid))


async def test_delay_warning_sent_once(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    app, queue = make_queue(lmtp=lmtp.address, users=USERS,
                            toml="delay_warning = 0.01\nretry_initial = 0.1\nretry_max = 0.1")
    app.dns.add("example.org.", "MX", ["10 mx.example.org."])
    app.dns.add("mx.example.org.", "A", ["127.0.0.1"])
    qid = await receive(queue, envelope(sender="alice@example.test", via="reinject",
                                        to=("someone@example.org",)))
    await eventually(lambda: queue.entries[qid].attempts >= 3, what="three attempts")
    warnings = lmtp.handler.to("alice@example.test")
    assert len(warnings) == 1
    status = parse(warnings[0]["content"]).get_payload()[1].get_payload()[1]
    assert status["Action"] == "delayed"
    assert status["Will-Retry-Until"]


# -- final delivery: remote MX ----------------------------------------------------------

def mx_dns(*records):
    dns = {}
    for name, rtype, values in records:
        dns[(name, rtype)] = values
    return dns


async def test_remote_5xx_bounces_only_that_recipient(make_queue, peers):
    mx = peers(Recorder(rcpt_replies={"bad@example.net": "550 5.1.1 no such user here"}))
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS, outbound_port=mx.port,
                            dns=mx_dns(("example.net.", "MX", ["10 mx.example.net."]),
                                       ("mx.example.net.", "A", ["127.0.0.1"])))
    qid = await receive(queue, envelope(sender="alice@example.test", via="submission",
                                        to=("good@example.net", "bad@example.net"),
                                        skip_scan=True))
    await eventually(lambda: not queue.spool.exists(qid) and lmtp.handler.messages)
    assert mx.handler.messages[0]["recipients"] == ["good@example.net"]
    report = parse(lmtp.handler.to("alice@example.test")[0]["content"])
    rcpts = report.get_payload()[1].get_payload()[1:]
    assert [r["Final-Recipient"] for r in rcpts] == ["rfc822; bad@example.net"]
    assert rcpts[0]["Remote-MTA"] == "dns; mx.example.net"
    # RET default: the original comes back in full.
    assert report.get_payload()[2].get_content_type() == "message/rfc822"


async def test_remote_4xx_then_250(make_queue, peers):
    mx = peers(Recorder(data_replies=["421 4.7.0 try again later"]))
    _app, queue = make_queue(outbound_port=mx.port,
                            dns=mx_dns(("example.net.", "MX", ["10 mx.example.net."]),
                                       ("mx.example.net.", "A", ["127.0.0.1"])))
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)))
    await eventually(lambda: mx.handler.messages, what="delivery on retry")
    await eventually(lambda: not queue.spool.exists(qid))


async def test_failover_to_second_mx_when_first_is_down(make_queue, peers):
    port = free_port("127.0.0.3")
    backup = peers(Recorder(), host="127.0.0.3", port=port)
    _app, queue = make_queue(outbound_port=port, dns=mx_dns(
        ("example.net.", "MX", ["10 mx1.example.net.", "20 mx2.example.net."]),
        ("mx1.example.net.", "A", ["127.0.0.2"]),           # nothing listens there
        ("mx2.example.net.", "A", ["127.0.0.3"])))
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)))
    await eventually(lambda: backup.handler.messages, what="delivery to the backup MX")
    assert queue.entries.get(qid) is None or queue.entries[qid].attempts == 1


async def test_implicit_mx_falls_back_to_a_record(make_queue, peers):
    mx = peers(Recorder())
    _app, queue = make_queue(outbound_port=mx.port,
                            dns=mx_dns(("example.net.", "A", ["127.0.0.1"])))
    await receive(queue, envelope(sender="alice@example.test", via="internal",
                                  to=("friend@example.net",)))
    await eventually(lambda: mx.handler.messages)


async def test_null_mx_bounces_at_once(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS,
                            dns=mx_dns(("example.net.", "MX", ["0 ."])))
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)))
    await eventually(lambda: lmtp.handler.messages, what="null MX bounce")
    rcpt = parse(lmtp.handler.messages[0]["content"]).get_payload()[1].get_payload()[1]
    assert rcpt["Status"] == "5.1.10"
    await eventually(lambda: not queue.spool.exists(qid) and qid not in queue.entries)


async def test_per_recipient_state_survives_restart(make_queue, peers):
    """Delivered recipients are persisted: a new Queue on the same spool retries only
    the pending one (no duplicate for alice)."""
    lmtp = peers(Recorder(lmtp_replies={"bob@example.test": ["452 4.2.2 full"]}), lmtp=True)
    app, queue = make_queue(lmtp=lmtp.address, users=USERS,
                            toml="retry_initial = 3600\nretry_max = 3600")
    qid = await receive(queue, envelope(to=("alice@example.test", "bob@example.test"),
                                        via="reinject"))
    await eventually(lambda: queue.entries[qid].attempts == 1 and queue.idle.is_set())
    await app.stop()
    state = {r.address: r.status for r in queue.spool.load(qid).recipients}
    assert state == {"alice@example.test": DELIVERED, "bob@example.test": PENDING}
    # Same data dir, a new process-like App.
    from mailyard.config import load
    from mailyard.queue import Queue
    from mailyard.server.app import App

    app2 = App(load(app.settings.source))
    queue2 = app2.component("queue", Queue)
    try:
        await queue2.start()
        queue2.flush()
        await eventually(lambda: not queue2.spool.exists(qid), what="bob delivered")
    finally:
        await app2.stop()
    assert len(lmtp.handler.to("alice@example.test")) == 1
    assert len(lmtp.handler.to("bob@example.test")) == 1
    assert FAILED not in state.values()


async def test_mx_pointing_back_at_us_bounces_as_a_loop(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS,
                            dns=mx_dns(("example.net.", "MX", ["10 mx.example.test."]),
                                       ("mx.example.test.", "A", ["127.0.0.1"])))
    await receive(queue, envelope(sender="alice@example.test", via="internal",
                                  to=("friend@example.net",)))
    await eventually(lambda: lmtp.handler.messages, what="loop bounce")
    rcpt = parse(lmtp.handler.messages[0]["content"]).get_payload()[1].get_payload()[1]
    assert rcpt["Status"] == "5.4.6"


async def test_outbound_mail_from_a_local_domain_is_dkim_signed(make_queue, peers):
    import dkim

    from mailyard.senderauth.dkim_sign import generate

    mx = peers(Recorder())
    app, queue = make_queue(outbound_port=mx.port,
                            dns=mx_dns(("example.net.", "MX", ["10 mx.example.net."]),
                                       ("mx.example.net.", "A", ["127.0.0.1"])))
    _selector, record = generate(app.data_path, "example.test", "s1", bits=1024)
    message = (b"From: Alice <alice@example.test>\r\nTo: friend@example.net\r\n"
               b"Subject: signed\r\nMessage-ID: <s1@example.test>\r\n\r\nHello.\r\n")
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)), message)
    await eventually(lambda: mx.handler.messages, what="signed delivery")
    received = mx.handler.messages[0]["content"]
    assert received.startswith(b"DKIM-Signature:")

    def dnsfunc(name, timeout=5):
        assert name == b"s1._domainkey.example.test."
        return record.encode()

    assert dkim.verify(received, dnsfunc=dnsfunc)
    # The spool kept the message as received (nothing to re-sign on a retry).
    assert not queue.spool.exists(qid)


async def test_bounces_to_one_sender_are_rate_limited(make_queue, peers):
    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS, toml="dsn_per_hour = 2")
    for _ in range(4):
        await receive(queue, envelope(sender="alice@example.test", via="reinject",
                                      to=("nobody@example.test",)))
    await eventually(lambda: not queue.entries and queue.idle.is_set(), what="all bounced")
    assert len(lmtp.handler.to("alice@example.test")) == 2


async def test_lmtp_over_a_unix_socket(make_queue, tmp_path):
    from aiosmtpd.controller import UnixSocketController
    from aiosmtpd.lmtp import LMTP

    class LMTPUnixController(UnixSocketController):
        def factory(self):
            return LMTP(self.handler)

    handler = Recorder()
    path = tmp_path / "lmtp.sock"
    controller = LMTPUnixController(handler, unix_socket=str(path))
    controller.start()
    try:
        _app, queue = make_queue(lmtp=f"unix:{path}", users=USERS)
        await receive(queue, envelope(via="reinject"))
        await eventually(lambda: handler.messages, what="LMTP delivery over unix:")
        assert handler.messages[0]["recipients"] == ["alice@example.test"]
    finally:
        controller.stop()


async def test_many_concurrent_messages_each_delivered_exactly_once(make_queue, peers):
    import asyncio

    lmtp = peers(Recorder(), lmtp=True)
    _app, queue = make_queue(lmtp=lmtp.address, users=USERS)

    async def one(i: int) -> str:
        return await receive(queue, envelope(via="reinject", to=USERS[:2]),
                             b"Subject: n%d\r\n\r\nbody\r\n" % i)

    ids = await asyncio.gather(*(one(i) for i in range(100)))
    assert len(set(ids)) == 100
    await eventually(lambda: not queue.entries, timeout=60, what="all delivered")
    for user in USERS[:2]:
        subjects = sorted(m["content"].split(b"\r\n")[0] for m in lmtp.handler.to(user))
        assert subjects == sorted(b"Subject: n%d" % i for i in range(100))


async def test_messages_to_one_domain_share_a_connection(make_queue, peers):
    mx = peers(Recorder())
    _app, queue = make_queue(outbound_port=mx.port,
                             dns=mx_dns(("example.net.", "MX", ["10 mx.example.net."]),
                                        ("mx.example.net.", "A", ["127.0.0.1"])))
    for i in range(3):
        qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                            to=("friend@example.net",)),
                            b"Subject: %d\r\n\r\nx\r\n" % i)
        await eventually(lambda q=qid: q not in queue.entries, what=f"message {i}")
    assert len(mx.handler.messages) == 3
    assert mx.handler.ehlos == 1
    assert queue.deliverer.connections.reused == 2


async def test_dead_idle_connection_falls_back_to_a_new_one(make_queue, peers):
    port = free_port()
    first = peers(Recorder(), port=port)
    _app, queue = make_queue(outbound_port=port,
                             dns=mx_dns(("example.net.", "MX", ["10 mx.example.net."]),
                                        ("mx.example.net.", "A", ["127.0.0.1"])))
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)))
    await eventually(lambda: qid not in queue.entries)
    first.stop()                      # the idle connection dies with its server
    second = peers(Recorder(), port=port)
    qid = await receive(queue, envelope(sender="alice@example.test", via="internal",
                                        to=("friend@example.net",)))
    await eventually(lambda: second.handler.messages, what="delivery on a new connection")
    assert queue.entries.get(qid) is None or queue.entries[qid].attempts == 1
