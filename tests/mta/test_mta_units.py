"""Units of the MTA without sockets: DNSBL, greylist, SASL, Received, the policy chain."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime

import pytest

from mailyard.accounts import AccountStore
from mailyard.config import load
from mailyard.dns import DnsTemporaryError, StaticResolver
from mailyard.mta.dnsbl import DnsblChecker, Zone
from mailyard.mta.greylist import Greylist, client_network
from mailyard.mta.policy import ClientInfo, RecipientPolicy
from mailyard.mta.rdns import confirmed_name
from mailyard.mta.received import protocol_name, received_header
from mailyard.mta.sasl import LOGIN_PASSWORD, LOGIN_USERNAME, SaslError, SaslExchange
from mailyard.smtp import parse_path, replies

# -- DNSBL ------------------------------------------------------------------------------------


async def test_dnsbl_ipv4_and_ipv6_names():
    resolver = StaticResolver({
        ("2.0.0.127.bl.test.", "A"): ["127.0.0.2"],
        ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.", "A"):
            ["127.0.0.4"],
    })
    checker = DnsblChecker(["bl.test"], resolver, timeout=1.0)
    assert (await checker.check("127.0.0.2")).zone == "bl.test"
    result = await checker.check("2001:db8::1")
    assert result.listed and result.answer == "127.0.0.4"
    assert not (await checker.check("127.0.0.3")).listed
    # An IPv4-mapped IPv6 client is looked up as IPv4.
    assert (await checker.check("::ffff:127.0.0.2")).listed


async def test_dnsbl_codes_errors_and_order():
    resolver = StaticResolver({
        ("2.0.0.127.first.test.", "A"): ["127.0.0.10"],
        ("2.0.0.127.second.test.", "A"): ["127.0.0.3"],
        ("2.0.0.127.third.test.", "A"): DnsTemporaryError,
        ("2.0.0.127.errors.test.", "A"): ["127.255.255.254"],
    })
    checker = DnsblChecker(["errors.test", "third.test", "first.test=127.0.0.2,127.0.0.4/31",
                            "second.test"], resolver, timeout=1.0)
    result = await checker.check("127.0.0.2")
    assert result.zone == "second.test"
    assert len(result.errors) == 1 and "third.test" in result.errors[0]


def test_zone_parse():
    zone = Zone.parse("Zen.Example.=127.0.0.2, 127.0.0.8/29")
    assert zone.name == "zen.example"
    assert zone.is_listing("127.0.0.9") and not zone.is_listing("127.0.0.3")
    assert not Zone.parse("x.test").is_listing("not-an-ip")


async def test_forward_confirmed_rdns():
    resolver = StaticResolver({
        ("9.2.0.192.in-addr.arpa.", "PTR"): ["mail.example.net."],
        ("mail.example.net.", "A"): ["192.0.2.9"],
        ("8.2.0.192.in-addr.arpa.", "PTR"): ["forged.example.net."],
        ("forged.example.net.", "A"): ["198.51.100.1"],
        ("7.2.0.192.in-addr.arpa.", "PTR"): DnsTemporaryError,
    })
    assert await confirmed_name(resolver, "192.0.2.9", 1.0) == "mail.example.net"
    assert await confirmed_name(resolver, "192.0.2.8", 1.0) == ""     # does not map back
    assert await confirmed_name(resolver, "192.0.2.7", 1.0) == ""     # DNS trouble
    assert await confirmed_name(resolver, "192.0.2.6", 1.0) == ""     # no PTR


# -- greylist ---------------------------------------------------------------------------------


def test_greylist_lifecycle(tmp_path):
    g = Greylist(tmp_path / "g.sqlite3", min_delay=300, retry_window=3600, auto_allowlist=2)
    t0 = 1_000_000.0
    first = g.check("192.0.2.10", "a@x.test", "u@example.test", now=t0)
    assert not first.passed and first.retry_after == 300
    early = g.check("192.0.2.10", "a@x.test", "u@example.test", now=t0 + 100)
    assert not early.passed and early.retry_after == 200
    # Same /24, another host of the sender's pool: same triplet.
    assert g.check("192.0.2.77", "A@X.test", "u@example.test", now=t0 + 301).passed
    assert g.check("192.0.2.10", "a@x.test", "u@example.test", now=t0 + 5000).passed
    # Retry window expired for a triplet that never passed: starts over.
    assert not g.check("192.0.2.10", "b@x.test", "u@example.test", now=t0).passed
    assert not g.check("192.0.2.10", "b@x.test", "u@example.test", now=t0 + 4000).passed
    assert g.check("192.0.2.10", "b@x.test", "u@example.test", now=t0 + 4400).passed
    # Two passes → the network is allowlisted.
    decision = g.check("192.0.2.10", "new@x.test", "u@example.test", now=t0 + 4500)
    assert decision.passed and "auto-allowlisted" in decision.reason
    g.close()


def test_greylist_state_survives_reopen(tmp_path):
    path = tmp_path / "g.sqlite3"
    g = Greylist(path, min_delay=0, retry_window=10, auto_allowlist=0)
    assert not g.check("2001:db8::1", "a@x", "b@y", now=1.0).passed
    g.close()
    g = Greylist(path, min_delay=0, retry_window=10, auto_allowlist=0)
    assert g.check("2001:db8::ffff", "a@x", "b@y", now=2.0).passed   # same /64
    g.close()


def test_client_network():
    assert client_network("192.0.2.200") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert client_network("::ffff:192.0.2.1") == "192.0.2.0/24"


# -- SASL -------------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_sasl_plain():
    ex = SaslExchange("PLAIN")
    assert ex.start(b64(b"\0alice\0pw")) == ("done", ("alice", "pw"))
    ex = SaslExchange("PLAIN")
    assert ex.start(None) == ("challenge", "")
    assert ex.step(b64(b"alice\0alice\0p\xc3\xa9")) == ("done", ("alice", "pé"))
    for bad in (b64(b"alice\0pw"), b64(b"bob\0alice\0pw"), "!!!", b64(b"\0\0pw"),
                b64(b"\0a\0\xff")):
        with pytest.raises(SaslError):
            SaslExchange("PLAIN").start(bad)


def test_sasl_login():
    ex = SaslExchange("LOGIN")
    assert ex.start(None) == ("challenge", LOGIN_USERNAME)
    assert ex.step(b64(b"alice")) == ("challenge", LOGIN_PASSWORD)
    assert ex.step(b64(b"pw")) == ("done", ("alice", "pw"))
    ex = SaslExchange("LOGIN")
    assert ex.start(b64(b"alice")) == ("challenge", LOGIN_PASSWORD)


# -- Received ---------------------------------------------------------------------------------


def test_received_header_format():
    header = received_header(
        helo="client.example", client_ip="192.0.2.1", hostname="mx.example.test",
        protocol=protocol_name(True, True, True), queue_id="Q1", tls="TLSv1.3 X",
        auth_user="alice@example.test", recipient="bob@example.test",
        when=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert header == (
        b"Received: from client.example (unknown [192.0.2.1])\r\n"
        b"\tby mx.example.test (mailyard) with ESMTPSA id Q1\r\n"
        b"\t(using TLSv1.3 X; authenticated as alice@example.test)\r\n"
        b"\tfor <bob@example.test>; Fri, 02 Jan 2026 03:04:05 +0000\r\n")


def test_received_header_neutralises_hostile_helo():
    header = received_header(helo="evil) (by\tspoof", client_ip="2001:db8::1",
                             hostname="mx", protocol="SMTP", queue_id="Q")
    first = header.split(b"\r\n")[0]
    assert first == b"Received: from evil?_?by?spoof (unknown [IPv6:2001:db8::1])".replace(
        b"_", b"?")
    assert header.count(b"\r\n") == 2


def test_protocol_names():
    assert protocol_name(False, False, False) == "SMTP"
    assert protocol_name(True, False, False) == "ESMTP"
    assert protocol_name(True, True, False) == "ESMTPS"
    assert protocol_name(True, False, True) == "ESMTPA"


# -- the chain, with a real account store and a dict resolver ----------------------------------


@pytest.fixture
def policy_parts(tmp_path):
    settings = load(None)
    settings = dataclasses.replace(
        settings, server=dataclasses.replace(settings.server, data_dir=str(tmp_path),
                                             domains=["example.test"]),
        greylist=dataclasses.replace(settings.greylist, min_delay=0))
    accounts = AccountStore.open(settings)
    accounts.add_user("alice@example.test", "pw")
    resolver = StaticResolver({("9.2.0.192.bl.test.", "A"): ["127.0.0.2"]})
    greylist = Greylist.from_settings(settings)
    yield settings, accounts, resolver, greylist
    greylist.close()
    accounts.close()


async def test_chain_order(policy_parts):
    settings, accounts, resolver, greylist = policy_parts
    policy = RecipientPolicy(settings, accounts, DnsblChecker(["bl.test"], resolver, 1.0),
                             greylist)
    alice = parse_path("<alice@example.test>")
    remote = parse_path("<carol@remote.example>")
    listed = ClientInfo("smtp", "192.0.2.9", trusted=False)
    clean = ClientInfo("smtp", "192.0.2.8", trusted=False)
    authed = ClientInfo("submission", "192.0.2.9", trusted=False, auth_user="alice")
    # 1. listed → refused before anything else, even for a local recipient
    result = await policy.check(listed, "x@y.test", alice)
    assert (result.step, result.reply.code) == ("dnsbl", 554)
    # 2. authenticated (even from a listed address) → relay
    result = await policy.check(authed, "alice@example.test", remote)
    assert (result.step, result.accepted) == ("relay", True)
    # 3. unknown local / remote
    result = await policy.check(clean, "x@y.test", parse_path("<nobody@example.test>"))
    assert result.reply == replies.MAILBOX_UNKNOWN
    result = await policy.check(clean, "x@y.test", remote)
    assert result.reply == replies.RELAY_DENIED
    # 4. greylist, then pass
    result = await policy.check(clean, "x@y.test", alice)
    assert (result.step, result.reply.code) == ("greylist", 451)
    result = await policy.check(clean, "x@y.test", alice)
    assert (result.step, result.accepted) == ("greylist", True)
    # Trusted: no DNSBL query at all, no greylisting.
    resolver.queries.clear()
    result = await policy.check(ClientInfo("smtp", "192.0.2.9", trusted=True), "x@y", remote)
    assert result.accepted and resolver.queries == []


async def test_broken_greylist_store_fails_open(policy_parts):
    settings, accounts, _resolver, greylist = policy_parts
    policy = RecipientPolicy(settings, accounts, None, greylist)
    greylist.close()     # every query now raises sqlite3.ProgrammingError
    result = await policy.check(ClientInfo("smtp", "192.0.2.8", trusted=False), "x@y.test",
                                parse_path("<alice@example.test>"))
    assert result.accepted and "failing open" in result.reason


def test_reinjection_allows_some_growth():
    from mailyard.mta.profiles import PROFILES, ehlo_lines, size_limit

    settings = load(None)
    assert size_limit(settings, PROFILES["smtp"]) == settings.smtp.max_message_size
    grown = size_limit(settings, PROFILES["reinject"])
    assert grown > settings.smtp.max_message_size
    lines = ehlo_lines(settings, "c", "192.0.2.1", starttls=False, auth=False, size=grown)
    assert f"SIZE {grown}" in lines and "STARTTLS" not in lines
    assert not any(line.startswith("AUTH") for line in lines)
