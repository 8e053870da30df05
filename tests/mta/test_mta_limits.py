"""Limits and hostile input over real sockets: SIZE, recipients, errors, connections,
timeouts, and SMTP smuggling payloads (CVE-2023-51764 class)."""

from __future__ import annotations

import smtplib

import pytest

from .peers import (
    SENDERAUTH_OFF,
    TRUSTED_ONLY_LOCALHOST,
    UNTRUSTED,
    RawClient,
    with_quiet_dns,
)

NO_GREYLIST = "[greylist]\nenabled = false\n"
USERS = ("alice@example.test", "bert@example.test", "cleo@example.test")


def config(sink, smtp_keys: str = "") -> str:
    return with_quiet_dns(TRUSTED_ONLY_LOCALHOST + smtp_keys + "\n" + SENDERAUTH_OFF
                          + NO_GREYLIST + sink.toml())


@pytest.fixture(scope="module")
def limited(module_server, module_sink):
    """Shared by most tests here: small SIZE, two recipients, three errors."""
    return module_server(toml=config(module_sink, "max_message_size = 2000\n"
                                     "max_recipients = 2\nmax_errors = 3"), users=USERS)


@pytest.fixture(scope="module")
def normalizing(module_server, module_sink):
    return module_server(toml=config(module_sink, 'bare_newlines = "normalize"\n'
                                     "smtputf8 = false"))


def session(srv, source=UNTRUSTED) -> RawClient:
    client = RawClient(srv.port("smtp"), source=source)
    assert client.reply()[0] == 220
    assert client.command("EHLO client.example")[0] == 250
    return client


def test_size_announced_and_enforced(limited, module_sink):
    client = session(limited)
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
        assert client.command("Subject: small-after-big\r\n\r\nok\r\n.")[0] == 250
    finally:
        client.close()
    module_sink.find(b"Subject: small-after-big")
    assert not module_sink.has(b"Subject: big\r\n")


def test_max_recipients(limited):
    with smtplib.SMTP("127.0.0.1", limited.port("smtp"), source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("client.example")
        c.mail("bob@remote.example")
        assert c.rcpt("alice@example.test")[0] == 250
        assert c.rcpt("bert@example.test")[0] == 250
        code, text = c.rcpt("cleo@example.test")
        assert (code, text[:5]) == (452, b"4.5.3")


def test_error_budget_disconnects(limited):
    client = session(limited)
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


def test_disconnect_mid_data_queues_nothing(limited, module_sink):
    client = session(limited)
    client.command("MAIL FROM:<cut@remote.example>")
    client.command("RCPT TO:<alice@example.test>")
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: cut\r\n\r\nhalf a mess")
    client.close()
    limited.wait_for_log("session end service=smtp client=127.0.0.2 helo=client.example "
                         "messages=0 errors=0")
    assert "cut@remote.example" not in limited.cli("queue", "list").stdout
    assert not list((limited.data_dir / "queue" / "tmp").glob("*"))
    assert not module_sink.has(b"half a mess")


def test_duplicate_recipient_delivered_once(limited, module_sink):
    with smtplib.SMTP("127.0.0.1", limited.port("smtp"), source_address=(UNTRUSTED, 0)) as c:
        c.ehlo("client.example")
        c.sendmail("bob@remote.example", ["alice@example.test", "ALICE@example.test"],
                   "Subject: twice\r\n\r\nhi\r\n")
    assert module_sink.find(b"Subject: twice")["recipients"] == ["alice@example.test"]


def test_smtputf8(limited, module_sink):
    client = session(limited)
    try:
        assert "SMTPUTF8" in client.command("EHLO client.example")[1].split("\n")
        client.send("MAIL FROM:<jürgen@bücher.example> SMTPUTF8\r\n".encode())
        assert client.reply()[0] == 250
        assert client.command("RCPT TO:<alice@example.test>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send("Subject: Grüße\r\n\r\nhallo\r\n.\r\n".encode())
        assert client.reply()[0] == 250
    finally:
        client.close()
    assert module_sink.find("Subject: Grüße".encode())["sender"] == "jürgen@bücher.example"


def test_smtputf8_off(normalizing):
    client = session(normalizing)
    try:
        assert "SMTPUTF8" not in client.command("EHLO client.example")[1].split("\n")
        assert client.command("MAIL FROM:<a@remote.example> SMTPUTF8")[0] == 555
        client.send("MAIL FROM:<jürgen@bücher.example>\r\n".encode())
        assert client.reply()[0] == 553
    finally:
        client.close()


def test_connections_per_ip(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"}, toml=config(sink, "max_connections_per_ip = 1"))
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
    srv = mailyard_server(services={"smtp"}, toml=config(sink, "command_timeout = 0.5"))
    client = session(srv)
    try:
        code, text = client.reply()      # we say nothing; the server gives up
        assert (code, text[:5]) == (421, "4.4.2")
        assert client.closed_by_server()
    finally:
        client.close()


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
def test_smuggling_over_socket(mode, request, module_sink):
    srv = request.getfixturevalue("limited" if mode == "reject" else "normalizing")
    client = session(srv)
    try:
        for name, variant in VARIANTS.items():
            assert client.command("MAIL FROM:<bob@remote.example>")[0] == 250
            assert client.command("RCPT TO:<alice@example.test>")[0] == 250
            assert client.command("DATA")[0] == 354
            marker = f"{mode}-{name}".encode()
            client.send(b"Subject: " + marker + b"\r\n\r\nhello" + variant + SMUGGLED
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
    for name in VARIANTS:
        marker = f"Subject: {mode}-{name}".encode()
        if mode == "normalize":
            message = module_sink.find(marker)
            assert message["content"].count(b"Subject: ") == 2   # both parts, one message
            assert message["recipients"] == ["alice@example.test"]
    assert not module_sink.has(b"Subject: reject-")
    # No message of its own was ever made from the smuggled part.
    first_subjects = [m["content"].split(b"Subject: ", 1)[-1][:8] for m in module_sink.messages]
    assert b"smuggled" not in first_subjects


def test_sigterm_says_421_to_idle_clients(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"}, toml=config(sink))
    client = session(srv)
    try:
        assert srv.stop() == 0               # SIGTERM; returns once the process exited
        code, text = client.reply()
        assert (code, text[:5]) == (421, "4.3.2")
        assert client.closed_by_server()
    finally:
        client.close()
    assert "closed idle sessions for shutdown sessions=1" in srv.log_text()
