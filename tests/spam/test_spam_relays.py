"""The Received-header relay path (mailyard.spam.relays) and the rules that read it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.spam import SpamEngine
from mailyard.spam.relays import Relay, parse_received, relay_path

CASES = [
    # sendmail / postfix: helo (rdns [ip])
    ("from mail.example.org (smtp.example.org [192.0.2.7]) by mx.example.test (Postfix) "
     "with ESMTP id 1C3D543F99 for <a@example.test>; Mon, 3 Mar 2025 10:00:00 +0000",
     dict(ip="192.0.2.7", rdns="smtp.example.org", helo="mail.example.org",
          by="mx.example.test", id="1C3D543F99")),
    # no reverse DNS: helo ([ip])
    ("from wu-wien.ac.at ([218.98.0.27]) by dogma.example.test (8.11.6/8.11.6) with SMTP id "
     "g8B7SkC06067 for <w@example.test>; Wed, 11 Sep 2002 08:28:47 +0100",
     dict(ip="218.98.0.27", rdns="", helo="wu-wien.ac.at", by="dogma.example.test")),
    # postfix's "unknown"
    ("from helo.example (unknown [198.51.100.9]) by mx.example.test (Postfix) with ESMTP id X1;"
     " Mon, 3 Mar 2025 10:00:00 +0000", dict(ip="198.51.100.9", rdns="", helo="helo.example")),
    # ident
    ("from medlicott.example.com (IDENT:welch@medlicott.example.com [172.17.132.188]) by "
     "gw.example.com (8.9.3/8.9.3) with ESMTP id VAA02021; Mon, 26 Aug 2002 21:17:00 -0400",
     dict(ip="172.17.132.188", rdns="medlicott.example.com", ident="welch")),
    # qmail: rdns (HELO helo) (ip)
    ("from unknown (HELO rly-xr02.example.net) (51.196.131.40) by mta.example.net with SMTP; "
     "11 Sep 2002 04:28:03 -1100", dict(ip="51.196.131.40", rdns="", helo="rly-xr02.example.net")),
    ("from keromail.example.com (203.117.141.101) by SERVER2 with SMTP; Tue, 27 Aug 2002",
     dict(ip="203.117.141.101", rdns="keromail.example.com", helo="keromail.example.com")),
    # qmail, the address first
    ("from 61.78.78.173 (HELO localhost) by smtp.example.net (209.228.32.110) with SMTP; "
     "16 Jul 2002 11:34:10 -0700", dict(ip="61.78.78.173", rdns="", helo="localhost")),
    # exim
    ("from host.example.com ([203.0.113.5] helo=client.example.com) by mx.example.test with "
     "esmtp (Exim 4.96) id 1abc; Mon, 3 Mar 2025 10:00:00 +0000",
     dict(ip="203.0.113.5", rdns="host.example.com", helo="client.example.com")),
    ("from [4.3.2.1] ([203.0.113.5]) by mx.example.test (8.12) id Q",
     dict(ip="203.0.113.5", rdns="", helo="4.3.2.1")),
    ("from [203.0.113.5] (helo=client) by mx.example.test with esmtpa (Exim 4.96) id 1abc",
     dict(ip="203.0.113.5", rdns="", helo="client")),
    # authenticated submission
    ("from laptop ([203.0.113.9]) by smtp.example.test with ESMTPSA id 77; Mon, 3 Mar 2025",
     dict(ip="203.0.113.9", auth="ESMTPSA")),
    ("from x (x [203.0.113.1]) by mx.example.test (Postfix) with ESMTP id Q (envelope-from "
     "<bounce@example.org>)", dict(envfrom="bounce@example.org")),
]


@pytest.mark.parametrize("header,expected", CASES)
def test_received_header_forms(header, expected):
    relay = parse_received(header)
    assert isinstance(relay, Relay)
    for key, value in expected.items():
        assert getattr(relay, key) == value, key


@pytest.mark.parametrize("header", [
    "(qmail 10721 invoked from network); 16 Jul 2002 11:34:10 -0700",
    "(from cpunks@localhost) by einstein.example.com (8.8.8/8.8.8) id NAA30813",
    "from phobos [127.0.0.1] by localhost with IMAP (fetchmail-5.9.0) for jm@localhost",
    "by mx.example.test with local id 12",
])
def test_headers_that_record_no_network_hop_are_skipped(header):
    assert parse_received(header) is None


def test_unreadable_address_counts_as_unparseable():
    assert parse_received("from host (999.1.1.1) by mx.example.test") is False
    assert relay_path(["from host (999.1.1.1) by mx.example.test"]).unparseable == 1


def test_trust_boundary_and_pseudo_headers():
    path = relay_path([
        "from localhost (localhost [127.0.0.1]) by mx.example.test (Postfix) id A1",
        "from gw (gw.lan [192.168.1.2]) by localhost (Postfix) id A2",
        "from spammer.example ([203.0.113.66]) by gw.lan (8.12) id A3",
        "from inner (inner.example [10.0.0.5]) by spammer.example id A4",
    ])
    assert [r.trusted for r in path.relays] == [True, True, False, False]
    assert path.boundary_index == 2
    external = path.pseudo_header("External")
    assert external.startswith("[ ip=203.0.113.66 rdns= helo=spammer.example by=gw.lan ")
    assert "intl=0 id=A3 auth= msa=0 ]" in external
    # a private address after an untrusted hop is not trusted again
    assert "ip=10.0.0.5" in external
    assert path.pseudo_header("Trusted").count("[ ip=") == 2


def _engine(tmp_path, rules: str) -> SpamEngine:
    (tmp_path / "r.cf").write_text(rules)
    return SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)


MSG = ("Received: from localhost (localhost [127.0.0.1]) by mx.example.test (Postfix) id A\r\n"
       "Received: from {helo} ({rdns}[203.0.113.66]) by mx.example.test (Postfix) id B\r\n"
       "From: a@example.org\r\nTo: b@example.test\r\nSubject: hi\r\n\r\nhello\r\n")


def test_rdns_none_style_rules_read_the_external_relays(tmp_path):
    engine = _engine(tmp_path, "header RDNS_NONE X-Spam-Relays-External =~ /^[^\\]]+ rdns= /\n"
                               "header HELO_NO_DOMAIN X-Spam-Relays-External =~ "
                               "/^[^\\]]+ helo=[^\\.]+ /\n"
                               "header HAS_EXT exists:X-Spam-Relays-External\n")
    hit = engine.scan(MSG.format(helo="pc", rdns="").encode())
    assert set(hit.rule_names) == {"RDNS_NONE", "HELO_NO_DOMAIN", "HAS_EXT"}
    miss = engine.scan(MSG.format(helo="mail.example.org", rdns="mail.example.org ").encode())
    assert miss.rule_names == ["HAS_EXT"]


def test_all_trusted_from_the_path(tmp_path):
    engine = _engine(tmp_path, "header ALL_TRUSTED eval:check_all_trusted()\n"
                               "score ALL_TRUSTED -1\n")
    local = (b"Received: from localhost (localhost [127.0.0.1]) by mx.example.test id A\r\n"
             b"Subject: x\r\n\r\nx\r\n")
    assert engine.scan(local).rule_names == ["ALL_TRUSTED"]
    assert engine.scan(MSG.format(helo="h", rdns="").encode()).rule_names == []
    # the MTA's own fact wins
    assert engine.scan(local, facts={"all_trusted": False}).rule_names == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_received_text_never_raises(text):
    result = parse_received(text)
    assert result is None or result is False or isinstance(result, Relay)
    relay_path([text, text])
