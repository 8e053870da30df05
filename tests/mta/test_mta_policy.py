"""The RCPT policy chain over real sockets, one step at a time, accept and refuse paths.

Clients connect from 127.0.0.2 (untrusted: trusted_networks is 127.0.0.1/32 here) or from
127.0.0.1 (trusted). The content filter hop is an aiosmtpd sink, so an accepted message can
be seen arriving, Received header and all.
"""

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
MESSAGE = "From: bob@remote.example\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def plain(module_server, module_sink):
    """One server without greylisting or blocklists, shared by the simple tests."""
    return module_server(toml=TRUSTED_ONLY_LOCALHOST + SENDERAUTH_OFF + module_sink.toml()
                         + NO_GREYLIST)


def start(mailyard_server, sink, toml: str = "", users=("alice@example.test",)):
    srv = mailyard_server(services={"smtp"}, domains=["example.test"],
                          toml=with_quiet_dns(TRUSTED_ONLY_LOCALHOST + SENDERAUTH_OFF
                                              + sink.toml() + toml))
    for user in users:
        srv.add_user(user)
    return srv


def smtp_from(srv, source: str) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", srv.port("smtp"), source_address=(source, 0),
                          timeout=20)
    client.ehlo("client.example")
    return client


def test_local_recipient_accepted_and_received_header(plain, module_sink):
    srv = plain
    with smtp_from(srv, UNTRUSTED) as client:
        client.mail("bob@remote.example")
        assert client.rcpt("alice@example.test")[0] == 250
        code, text = client.data(MESSAGE.replace("hello", "local-accept"))
        assert code == 250 and b"queued as" in text
    message = module_sink.find(b"local-accept")
    assert message["recipients"] == ["alice@example.test"]
    first = message["content"].split(b"\r\n\t")
    assert first[0] == b"Received: from client.example (unknown [127.0.0.2])"
    assert b"by mx.example.test (mailyard) with ESMTP id " in message["content"]
    assert b"for <alice@example.test>;" in message["content"]
    assert message["content"].endswith(b"\r\n\r\nlocal-accept\r\n")
    assert "step=recipient result=accept" in srv.log_text()


def test_unknown_local_recipient_refused(plain):
    with smtp_from(plain, UNTRUSTED) as client:
        client.mail("bob@remote.example")
        code, text = client.rcpt("nobody@example.test")
        assert (code, text[:5]) == (550, b"5.1.1")


def test_relay_refused_for_untrusted_allowed_for_trusted(plain, module_sink):
    srv = plain
    with smtp_from(srv, UNTRUSTED) as client:
        client.mail("alice@example.test")      # a spoofed local sender changes nothing
        code, text = client.rcpt("carol@remote.example")
        assert code == 554 and text.startswith(b"5.7.1 Relay access denied")
    with smtp_from(srv, "127.0.0.1") as client:
        client.mail("alice@example.test")
        assert client.rcpt("carol@remote.example")[0] == 250
        assert client.data(MESSAGE.replace("hello", "trusted-relay"))[0] == 250
    message = module_sink.find(b"trusted-relay")
    assert message["recipients"] == ["carol@remote.example"]
    assert "reason=\"trusted network\"" in srv.log_text()


# The open-relay trick matrix: each must be refused from an untrusted client.
RELAY_TRICKS = [
    ("plain_remote", "<carol@remote.example>"),
    ("percent_hack", "<carol%remote.example@example.test>"),
    ("bang_path", "<remote.example!carol@example.test>"),
    ("source_route", "<@example.test:carol@remote.example>"),
    ("source_route_two_hops", "<@example.test,@mx.example.test:carol@remote.example>"),
    ("quoted_local_part", '<"carol@remote.example"@example.test>'),
    ("quoted_percent", '<"carol%remote.example"@example.test>'),
    ("double_at", "<carol@remote.example@example.test>"),
    ("ip_literal", "<carol@[192.0.2.1]>"),
    ("ip_literal_loopback", "<alice@[127.0.0.1]>"),
    ("ipv6_literal", "<alice@[IPv6:::1]>"),
    ("trailing_dot_remote", "<carol@remote.example.>"),
    ("trailing_dot_local", "<alice@example.test.>"),
    ("local_domain_suffix", "<carol@remote.example.example.test>"),
    ("local_domain_prefix", "<carol@example.test.remote.example>"),
    ("no_brackets", "carol@remote.example"),
    ("crlf_injection", "<carol@remote.example>\rRCPT TO:<x@remote.example>"),
]


@pytest.mark.parametrize("rcpt", [r for _, r in RELAY_TRICKS],
                         ids=[n for n, _ in RELAY_TRICKS])
def test_open_relay_matrix(rcpt, request):
    srv = request.getfixturevalue("relay_server")
    client = RawClient(srv.port("smtp"), source=UNTRUSTED)
    try:
        client.reply()
        client.command("EHLO client.example")
        assert client.command("MAIL FROM:<alice@example.test>")[0] == 250
        code, _ = client.command(f"RCPT TO:{rcpt}")
        assert 500 <= code < 600, f"{rcpt} was not refused ({code})"
        assert client.command("DATA")[0] in (503, 554)
        client.command("QUIT")
    finally:
        client.close()


@pytest.fixture(scope="module")
def relay_server(tmp_path_factory):
    """One server for the whole matrix (started once; greylisting on, so nothing that slips
    through the relay check could be mistaken for an accepted relay)."""
    from harness import MailyardServer

    from .peers import Sink

    sink = Sink()
    srv = MailyardServer(root=tmp_path_factory.mktemp("relay"), services={"smtp"},
                         domains=["example.test"],
                         toml=with_quiet_dns(TRUSTED_ONLY_LOCALHOST + SENDERAUTH_OFF
                                             + sink.toml()))
    srv.start()
    srv.add_user("alice@example.test")
    yield srv
    srv.stop()
    assert sink.messages == []
    sink.stop()


def test_dnsbl(mailyard_server, sink, dns_server):
    """Each client address exercises one path of the blocklist step."""
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")         # .2: listed
    dns_server.add("2.0.0.127.bl.test", "TXT", "listed for testing")
    dns_server.add("3.0.0.127.codes.test", "A", "127.0.0.2")      # .3: answer filtered out
    dns_server.add("3.0.0.127.err.test", "A", "127.255.255.254")  # .3: a resolver error code
    dns_server.fail("3.0.0.127.broken.test")                      # .3: SERVFAIL, fail open
    dns_server.add("4.0.0.127.codes.test", "A", "127.0.0.5")      # .4: a code we block on
    dns_server.add("5.0.0.127.bl.test", "A", "127.0.0.2")         # .5: listed, allowlisted
    srv = start(mailyard_server, sink, NO_GREYLIST + f'[dns]\nnameservers = '
                f'["{dns_server.address}"]\n[dnsbl]\nzones = ["codes.test=127.0.0.4/30", '
                f'"err.test", "broken.test", "bl.test"]\ntimeout = 3.0\n'
                f'allowlist = ["127.0.0.5/32"]\n')

    def rcpt_from(source: str) -> tuple[int, bytes]:
        with smtp_from(srv, source) as client:
            client.mail("bob@remote.example")
            return client.rcpt("alice@example.test")

    assert rcpt_from("127.0.0.2") == (
        554, b"5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test")
    # All zones were asked, in parallel, whatever the first one said.
    assert ("2.0.0.127.codes.test.", "A") in dns_server.queries
    assert rcpt_from("127.0.0.3")[0] == 250
    assert "failing open" in srv.log_text()
    assert rcpt_from("127.0.0.4")[0] == 554
    assert rcpt_from("127.0.0.5")[0] == 250
    assert ("5.0.0.127.bl.test.", "A") not in dns_server.queries
    assert rcpt_from("127.0.0.1")[0] == 250                       # trusted: never looked up
    assert ("1.0.0.127.bl.test.", "A") not in dns_server.queries
    assert "step=dnsbl result=554" in srv.log_text()


def test_greylist_defers_then_accepts(mailyard_server, sink):
    srv = start(mailyard_server, sink, "[greylist]\nmin_delay = 0\nauto_allowlist = 2\n")
    for attempt in range(2):
        with smtp_from(srv, UNTRUSTED) as client:
            client.mail("bob@remote.example")
            code, text = client.rcpt("alice@example.test")
            if attempt == 0:
                assert code == 451 and text.startswith(b"4.7.1 Greylisted")
            else:
                assert code == 250
                assert client.data(MESSAGE)[0] == 250
    sink.wait(1)
    # A different sender from the same /24 is a new triplet: deferred once more...
    with smtp_from(srv, "127.0.0.9") as client:
        client.mail("dave@remote.example")
        assert client.rcpt("alice@example.test")[0] == 451
        client.rset()
        client.mail("dave@remote.example")
        assert client.rcpt("alice@example.test")[0] == 250
    # ...and after two passes the network is allowlisted: new triplets pass at once.
    with smtp_from(srv, UNTRUSTED) as client:
        client.mail("erin@remote.example")
        assert client.rcpt("alice@example.test")[0] == 250
    assert "auto-allowlisted" in srv.log_text()


def test_greylist_retry_too_early_says_when(mailyard_server, sink):
    srv = start(mailyard_server, sink, "[greylist]\nmin_delay = 3600\n")
    for _ in range(2):
        with smtp_from(srv, UNTRUSTED) as client:
            client.mail("bob@remote.example")
            code, text = client.rcpt("alice@example.test")
            assert code == 451 and b"try again in" in text
    # Trusted clients are never greylisted.
    with smtp_from(srv, "127.0.0.1") as client:
        client.mail("bob@remote.example")
        assert client.rcpt("alice@example.test")[0] == 250
