"""The queue inside the real server process: smtplib → MTA → queue → filter next hop.

kill -9 right after the 250, restart, and the message still reaches the next hop; the
`mailyard queue` CLI sees the spool of the running server and `flush` makes it retry.
"""

from __future__ import annotations

import json
import smtplib
import time

from conftest import Peer, Recorder
from harness import free_port

MESSAGE = b"From: a@example.net\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello.\r\n"


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    """A hang guard, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
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
        # Never attempted before the crash: due at once after the restart.
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
