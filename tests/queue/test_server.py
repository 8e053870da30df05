"""The queue inside the real server process: smtplib → MTA → queue → filter next hop.

kill -9 right after the 250, restart, and the message still reaches the next hop; the
`mailyard queue` CLI sees the spool of the running server and `flush` makes it retry.
"""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import time

from harness import free_port
from queue_support import Peer, Recorder

MESSAGE = b"From: a@example.net\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello.\r\n"


def wait_until(predicate, timeout: float = 30.0, what: str = "condition", srv=None) -> None:
    """A hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            log = srv.log_text()[-5000:] if srv is not None else ""
            raise AssertionError(f"timed out waiting for {what}\n{log}")
        time.sleep(0.05)


def queue_list(srv) -> list[dict]:
    return json.loads(srv.cli("queue", "list", "--json").stdout)


def test_kill9_after_250_then_restart_delivers(mailyard_server):
    filter_port = free_port()                       # the filter is down at first
    srv = mailyard_server(services={"smtp"}, toml=f"""
[filter]
next_hop = "127.0.0.1:{filter_port}"
[greylist]
enabled = false
[queue]
retry_initial = 3600
retry_max = 3600
control_poll = 0.1
""")
    srv.add_user("alice@example.test")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as client:
        client.sendmail("a@example.net", ["alice@example.test"], MESSAGE % b"first")
        code, _ = client.noop()
        assert code == 250
    srv.kill()                                      # kill -9 just after the 250
    (entry,) = queue_list(srv)
    assert entry["recipients"][0]["address"] == "alice@example.test"

    peer = Peer(Recorder(), "127.0.0.1", filter_port)
    try:
        srv.start()
        # Never attempted before the crash: due at once after the restart. (With accepting
        # workers the main process may try the down filter before the client sees the 250;
        # then the entry is deferred for an hour and only a flush sends it now.)
        if entry.get("attempts"):
            srv.cli("queue", "flush")
        wait_until(lambda: peer.handler.messages, what="delivery after restart")
        assert b"Subject: first" in peer.handler.messages[0]["content"]
        wait_until(lambda: queue_list(srv) == [], what="empty queue")

        # Deferred with a one-hour back-off; `mailyard queue flush` makes it go now.
        peer.stop()
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as client:
            client.sendmail("a@example.net", ["alice@example.test"], MESSAGE % b"second")
        wait_until(lambda: (queue_list(srv) or [{}])[0].get("attempts") == 1,
                   what="a failed attempt")
        peer = Peer(Recorder(), "127.0.0.1", filter_port)
        srv.cli("queue", "flush")
        wait_until(lambda: peer.handler.messages, what="delivery after flush")
        assert b"Subject: second" in peer.handler.messages[0]["content"]
    finally:
        peer.stop()


def test_kill9_mid_data_then_restart_delivers_nothing(mailyard_server):
    """The server dies while a client is half-way through DATA: after the restart the torn
    queue file is discarded (a log line says so) and nothing of it is ever delivered,
    while the next message goes through."""
    from mailyard.queue.incoming import FLUSH_AT

    peer = Peer(Recorder(), "127.0.0.1", free_port())
    try:
        srv = mailyard_server(services={"smtp"}, toml=f"""
[filter]
next_hop = "{peer.address}"
[greylist]
enabled = false
""")
        srv.add_user("alice@example.test")
        active = srv.data_dir / "queue" / "active"
        client = smtplib.SMTP("127.0.0.1", srv.port("smtp"))
        client.ehlo("client.example")
        assert client.mail("a@example.net")[0] == 250
        assert client.rcpt("alice@example.test")[0] == 250
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: torn\r\n\r\n" + b"x" * 998 + b"\r\n")
        client.send((b"y" * 998 + b"\r\n") * (FLUSH_AT // 1000 + 10))
        # Past the in-memory buffer: the start of the message is in its queue file.
        wait_until(lambda: any(p.stat().st_size > FLUSH_AT for p in active.glob("*.q")),
                   what="the torn message in the spool", srv=srv)
        srv.kill()
        client.close()
        srv.start()
        srv.wait_for_log("discarded incomplete entry")
        assert queue_list(srv) == []
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as c:
            c.sendmail("a@example.net", ["alice@example.test"], MESSAGE % b"after")
        wait_until(lambda: peer.handler.messages, what="the next message", srv=srv)
        wait_until(lambda: queue_list(srv) == [], what="empty queue", srv=srv)
        assert [b"Subject: after" in m["content"] for m in peer.handler.messages] == [True]
    finally:
        peer.stop()


class Relay(Recorder):
    """A content filter stand-in that is a real SMTP server: it adds a header and hands the
    message back to mailyard's reinject listener with smtplib (what AMaViS does)."""

    def __init__(self, reinject_port: int):
        super().__init__()
        self.reinject_port = reinject_port

    async def handle_DATA(self, server, session, envelope):
        content = b"X-Filtered: yes\r\n" + envelope.original_content
        with smtplib.SMTP("127.0.0.1", self.reinject_port) as client:
            client.sendmail(envelope.mail_from, envelope.rcpt_tos, content)
        return await super().handle_DATA(server, session, envelope)


def test_smtp_filter_reinject_then_lmtp_next_hop(mailyard_server):
    """The queue's two stages in the real server: smtp → queue → filter hop → reinject →
    queue → LMTP, the last hop an outside LMTP server (`[queue] lmtp_next_hop`, the way a
    Dovecot LMTP socket would be used)."""
    lmtp = Peer(Recorder(), "127.0.0.1", free_port(), lmtp=True)
    filter_port = free_port()
    relay = None
    try:
        srv = mailyard_server(services={"smtp", "reinject"}, toml=f"""
[greylist]
enabled = false
[filter]
next_hop = "127.0.0.1:{filter_port}"
[queue]
lmtp_next_hop = "{lmtp.address}"
retry_initial = 0.5
retry_max = 1
control_poll = 0.1
""")
        relay = Peer(Relay(srv.port("reinject")), "127.0.0.1", filter_port)
        srv.add_user("alice@example.test")
        srv.add_user("bob@example.test")
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as client:
            client.sendmail("a@example.net", ["alice@example.test", "bob@example.test"],
                            MESSAGE % b"through the filter")
        wait_until(lambda: lmtp.handler.messages, what="LMTP delivery", srv=srv)
        (delivered,) = lmtp.handler.messages
        assert sorted(delivered["recipients"]) == ["alice@example.test", "bob@example.test"]
        assert delivered["sender"] == "a@example.net"
        assert b"\r\nX-Filtered: yes\r\n" in delivered["content"]      # after Received:
        assert b"Subject: through the filter" in delivered["content"]
        assert len(relay.handler.messages) == 1
        wait_until(lambda: queue_list(srv) == [], what="empty queue")
    finally:
        lmtp.stop()
        if relay is not None:
            relay.stop()


def test_dsn_parameters_survive_the_filter_hop(mailyard_server):
    """NOTIFY, ORCPT and ENVID given to our MX travel with the message over the filter hop
    (here pointed straight at our reinject listener, which speaks DSN) and come back in
    the success DSN that final delivery sends."""
    lmtp = Peer(Recorder(), "127.0.0.1", free_port(), lmtp=True)
    try:
        srv = mailyard_server(services={"smtp", "reinject"}, start=False)
        srv.toml = f"""
[greylist]
enabled = false
[filter]
next_hop = "{srv.address('reinject')}"
[queue]
lmtp_next_hop = "{lmtp.address}"
retry_initial = 0.5
retry_max = 1
"""
        srv.write_config()
        srv.start()
        srv.add_user("alice@example.test")
        srv.add_user("bob@example.test")
        with smtplib.SMTP("127.0.0.1", srv.port("smtp")) as client:
            client.ehlo()
            assert client.has_extn("dsn")
            client.sendmail("bob@example.test", ["alice+tag@example.test"],
                            MESSAGE % b"dsn please",
                            mail_options=["RET=HDRS", "ENVID=env+2B42"],
                            rcpt_options=["NOTIFY=SUCCESS,FAILURE",
                                          "ORCPT=rfc822;Alice+2Btag@example.test"])
        wait_until(lambda: len(lmtp.handler.messages) >= 2, what="message and DSN", srv=srv)
        reports = [email.message_from_bytes(m["content"], policy=email.policy.default)
                   for m in lmtp.handler.to("bob@example.test")]
        (report,) = [r for r in reports if r.get_content_type() == "multipart/report"]
        per_message, per_rcpt = report.get_payload()[1].get_payload()
        assert per_message["Original-Envelope-Id"] == "env+42"
        assert per_rcpt["Action"] == "delivered"
        assert per_rcpt["Original-Recipient"] == "rfc822; Alice+tag@example.test"
        assert report.get_payload()[2].get_content_type() == "text/rfc822-headers"
    finally:
        lmtp.stop()
