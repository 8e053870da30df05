"""Limits and hostile input over real sockets: SIZE, recipients, errors, connections,
timeouts, and SMTP smuggling payloads (CVE-2023-51764 class)."""

from __future__ import annotations

import smtplib

import pytest

from .peers import TRUSTED_ONLY_LOCALHOST, UNTRUSTED, RawClient

NO_GREYLIST = "[greylist]\nenabled = false\n"


def start(mailyard_server, sink, smtp_keys: str = ""):
    srv = mailyard_server(services={"smtp"}, domains=["example.test"],
                          toml=TRUSTED_ONLY_LOCALHOST + smtp_keys + "\n" + NO_GREYLIST
                          + sink.toml())
    srv.add_user("alice@example.test")
    return srv


def session(srv, source=UNTRUSTED) -> RawClient:
    client = RawClient(srv.port("smtp"), source=source)
    assert client.reply()[0] == 220
    assert client.command("EHLO client.example")[0] == 250
    return client


def test_size_announced_and_enforced(mailyard_server, sink):
    srv = start(mailyard_server, sink, "max_message_size = 2000")
    client = session(srv)
    try:
        code, text = client.command("EHLO client.example")
        assert "SIZE 2000" in text.split("\n")
        code, text = client.command("MAIL FROM:<bob@remote.example> SIZE=5000")
        assert (code, text[:5]) == (552, "5.3.4")
        assert client.command("MAIL FROM:<bob@remote.example> SIZE=100")[0] == 250
        assert client.command("RCPT TO:<alice@example.test>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 100 + b".\r\n")
        code, text = client.reply()
        assert (code, text[:5]) == (552, "5.3.4")
        # The session goes on; a small message still passes.
        assert client.command("MAIL FROM:<bob@remote.example>")[0] == 250
        assert client.command("RCPT TO:<alice@example.test>")[0] == 250
        assert client.command("DATA")[0] == 354
        assert client.command("Subject: small\r\n\r\nok\r\n.")[0] == 250
    finally:
        client.close()
    [message] = sink.wait(1)
    assert b"Subject: small" in message["content"]


def test_max_recipients(mailyard_server, sink):
    srv = start(mailyard_server, sink, "max_recipients = 2")
    srv.add_user("bert@example.test")
    srv.add_user("cleo@example.test")
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("client.example")
        c.mail("bob@remote.example")
        assert c.rcpt("alice@example.test")[0] == 250
        assert c.rcpt("bert@example.test")[0] == 250
        code, text = c.rcpt("cleo@example.test")
        assert (code, text[:5]) == (452, b"4.5.3")


def test_error_budget_disconnects(mailyard_server, sink):
    srv = start(mailyard_server, sink, "max_errors = 3")
    client = session(srv)
    try:
        assert client.command("BOGUS")[0] == 500
        assert client.command("MAIL FROM:broken")[0] == 501
        client.send(b"RCPT TO:<x@y.z>\r\n")
        assert client.reply()[0] == 503
        code, text = client.reply()
        assert (code, text[:5]) == (421, "4.7.0")
        assert client.closed_by_server()
    finally:
        client.close()


def test_connections_per_ip(mailyard_server, sink):
    srv = start(mailyard_server, sink, "max_connections_per_ip = 1")
    first = session(srv)
    second = RawClient(srv.port("smtp"), source=UNTRUSTED)
    try:
        code, text = second.reply()
        assert (code, text[:5]) == (421, "4.7.0")
        # Another address is not affected.
        other = session(srv, source="127.0.0.3")
        other.close()
    finally:
        first.close()
        second.close()


def test_command_timeout(mailyard_server, sink):
    srv = start(mailyard_server, sink, "command_timeout = 0.5")
    client = session(srv)
    try:
        code, text = client.reply()      # we say nothing; the server gives up
        assert (code, text[:5]) == (421, "4.4.2")
        assert client.closed_by_server()
    finally:
        client.close()


def test_disconnect_mid_data_queues_nothing(mailyard_server, sink):
    srv = start(mailyard_server, sink)
    client = session(srv)
    client.command("MAIL FROM:<bob@remote.example>")
    client.command("RCPT TO:<alice@example.test>")
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: cut\r\n\r\nhalf a mess")
    client.close()
    srv.wait_for_log("session end service=smtp client=127.0.0.2")
    spool = srv.data_dir / "queue"
    assert not list(spool.rglob("*.msg")) and not list(spool.rglob("*.env"))
    assert sink.messages == []


SMUGGLED = (b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
            b"From: admin@example.test\r\nSubject: smuggled\r\n\r\nforged\r\n")

VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_dot_cr": b"\r\n.\r",
}


@pytest.mark.parametrize("mode", ["reject", "normalize"])
def test_smuggling_over_socket(mailyard_server, sink, mode):
    srv = start(mailyard_server, sink, f'bare_newlines = "{mode}"')
    client = session(srv)
    try:
        for name, variant in VARIANTS.items():
            assert client.command("MAIL FROM:<bob@remote.example>")[0] == 250
            assert client.command("RCPT TO:<alice@example.test>")[0] == 250
            assert client.command("DATA")[0] == 354
            client.send(b"Subject: " + name.encode() + b"\r\n\r\nhello" + variant + SMUGGLED
                        + b".\r\n")
            code, text = client.reply()
            if mode == "reject":
                assert (code, text[:5]) == (554, "5.6.0"), name
            else:
                assert code == 250, name
            # Exactly one reply came for the whole payload: the next command is answered
            # as a command, not as a smuggled message's DATA.
            assert client.command("NOOP")[0] == 250
    finally:
        client.close()
    if mode == "normalize":
        messages = sink.wait(len(VARIANTS))
        assert len(messages) == len(VARIANTS)
        for message in messages:
            assert message["content"].count(b"Subject: ") == 2   # both parts, one message
            assert message["recipients"] == ["alice@example.test"]
    else:
        assert sink.messages == []
