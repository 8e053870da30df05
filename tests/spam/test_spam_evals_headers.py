"""Header, relay and VBounce evals (mailyard.spam.evals_headers): each with a hit and a near miss."""

from __future__ import annotations

import email.utils

import pytest

from mailyard.spam import SpamEngine

RULES = """
header UNPARSEABLE   eval:check_relays_unparseable()
header HELO_IP_MISMATCH eval:helo_ip_mismatch()
header NO_RDNS_DOTCOM   eval:check_for_no_rdns_dotcom_helo()
header FORGED_YAHOO  eval:check_for_forged_yahoo_received_headers()
header FORGED_HOTMAIL2 eval:check_for_no_hotmail_received_headers()
header FORGED_GMAIL  eval:check_for_forged_gmail_received_headers()
header FROM_DIFF     eval:check_equal_from_domains()
header SIMILAR       eval:similar_recipients('0.65', 'undef')
header SORTED        eval:sorted_recipients()
header OE_MSGID      eval:check_outlook_message_id()
header FREEMAIL_FROM eval:check_freemail_from()
header BOUNCE_RELAYS eval:have_any_bounce_relays()
body   OUR_BOUNCE    eval:check_welcomelist_bounce_relays()
freemail_domains gmail.com yahoo.com hotmail.com
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "r.cf").write_text(RULES)
    return SpamEngine(rules_dirs=[d], builtin_rules=False)


@pytest.fixture(scope="module")
def bounce_engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "r.cf").write_text(RULES + "welcomelist_bounce_relays mx.example.test\n")
    return SpamEngine(rules_dirs=[d], builtin_rules=False)


def msg(*headers: str, body: str = "hello") -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


def rcvd(frm: str) -> str:
    return f"Received: from {frm} by mx.example.test (Postfix) id Q1; Mon, 3 Mar 2025 10:00:00 +0000"


def hits(engine, m, **kw) -> set[str]:
    return set(engine.scan(m, **kw).rule_names) - {"FREEMAIL_FROM"}


def test_relays_unparseable(engine):
    assert "UNPARSEABLE" in hits(engine, msg(rcvd("host (300.1.2.3)"), "Subject: x"))
    assert "UNPARSEABLE" not in hits(engine, msg(rcvd("host ([1.2.3.4])"), "Subject: x"))


def test_helo_ip_mismatch(engine):
    assert "HELO_IP_MISMATCH" in hits(engine, msg(rcvd("[5.6.7.8] ([1.2.3.4])")))
    # the same /24: a multi-homed host, not a lie
    assert "HELO_IP_MISMATCH" not in hits(engine, msg(rcvd("[1.2.3.9] ([1.2.3.4])")))


def test_no_rdns_dotcom_helo(engine):
    assert "NO_RDNS_DOTCOM" in hits(engine, msg(rcvd("mx1.hotmail.com ([203.0.113.9])")))
    assert "NO_RDNS_DOTCOM" not in hits(
        engine, msg(rcvd("mx1.hotmail.com (mx1.hotmail.com [203.0.113.9])")))
    assert "NO_RDNS_DOTCOM" not in hits(engine, msg(rcvd("mail.example.org ([203.0.113.9])")))


def test_forged_yahoo_and_hotmail_and_gmail(engine):
    spoof = rcvd("pc ([203.0.113.9])")
    assert {"FORGED_YAHOO"} <= hits(engine, msg(spoof, "From: a@yahoo.com"))
    assert "FORGED_YAHOO" not in hits(engine, msg(
        rcvd("web1.mail.yahoo.com (web1.mail.yahoo.com [203.0.113.9])"), "From: a@yahoo.com"))
    assert "FORGED_HOTMAIL2" in hits(engine, msg(spoof, "From: a@hotmail.com"))
    assert "FORGED_HOTMAIL2" not in hits(engine, msg(
        rcvd("hotmail.com (f1.law15.hotmail.com [203.0.113.9])"), "From: a@hotmail.com"))
    assert "FORGED_GMAIL" in hits(engine, msg(spoof, "From: a@gmail.com"))
    assert "FORGED_GMAIL" not in hits(engine, msg(
        rcvd("mail-x.google.com (mail-x.google.com [203.0.113.9])"), "From: a@gmail.com"))


def test_equal_from_domains(engine):
    assert "FROM_DIFF" in hits(engine, msg("Return-Path: <b@bulk.example>",
                                           "From: a@shop.example.org"))
    # same registered domain (mail.example.co.uk / example.co.uk)
    assert "FROM_DIFF" not in hits(engine, msg("Return-Path: <b@mail.example.co.uk>",
                                               "From: a@example.co.uk"))
    # the MTA's envelope sender wins over the header
    assert "FROM_DIFF" not in hits(engine, msg("Return-Path: <b@bulk.example>",
                                               "From: a@shop.example.org"),
                                   facts={"envelope_from": "x@example.org"})


def test_freemail_from_reads_the_envelope_sender(engine):
    m = msg("Return-Path: <someone@gmail.com>", "From: a@shop.example.org")
    assert "FREEMAIL_FROM" in engine.scan(m).rule_names
    assert "FREEMAIL_FROM" not in engine.scan(msg("From: a@shop.example.org")).rule_names


def test_similar_and_sorted_recipients(engine):
    similar = "To: " + ", ".join(f"john{c}@example.net" for c in "abcdefg")
    assert {"SIMILAR", "SORTED"} <= hits(engine, msg(similar))
    varied = "To: " + ", ".join(["zed@a.example", "amy@b.example", "bob@c.example",
                                 "carl@d.example", "dora@e.example"])
    assert not {"SIMILAR", "SORTED"} & hits(engine, msg(varied))


def _oe_msgid(ts: float) -> str:
    high = int((ts + 11644473600) * 10 ** 7) >> 32
    return f"Message-ID: <0000{high:08x}$0a1b2c3d$4e5f6071@pc>"


def test_outlook_message_id(engine):
    ts = 1741000000.0
    date = "Date: " + email.utils.formatdate(ts)
    assert "OE_MSGID" not in hits(engine, msg(_oe_msgid(ts), date))
    assert "OE_MSGID" in hits(engine, msg(_oe_msgid(ts - 86400 * 30), date))
    assert "OE_MSGID" not in hits(engine, msg("Message-ID: <abc@pc>", date))


def test_vbounce(engine, bounce_engine):
    bounce = msg("From: MAILER-DAEMON@example.org", "Subject: Undeliverable",
                 body="Received: from pc ([203.0.113.9]) by mx.example.test id Q; Mon\r\n")
    assert not {"BOUNCE_RELAYS", "OUR_BOUNCE"} & hits(engine, bounce)
    assert {"BOUNCE_RELAYS", "OUR_BOUNCE"} <= hits(bounce_engine, bounce)
    other = msg("From: MAILER-DAEMON@example.org", "Subject: Undeliverable",
                body="Received: from pc ([203.0.113.9]) by mx.other.example id Q; Mon\r\n")
    assert "OUR_BOUNCE" not in hits(bounce_engine, other)


def test_stock_vbounce_rules_load(stock_engine):
    reasons = {r for _, _, r in stock_engine.ruleset.skipped}
    assert "needs plugin VBounce" not in reasons
    assert "BOUNCE_MESSAGE" in stock_engine.ruleset.rules


def test_mailfrom_matches_rcvd(tmp_path):
    (tmp_path / "r.cf").write_text("header RP_MATCHES eval:check_mailfrom_matches_rcvd()\n")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    list_mail = msg("Return-Path: <bounces@lists.example.org>",
                    rcvd("out.example.org (mail3.example.org [1.2.3.4])"))
    assert engine.scan(list_mail).rule_names == ["RP_MATCHES"]
    forged = msg("Return-Path: <bounces@lists.example.org>",
                 rcvd("out.example.org (dsl-9.isp.example [1.2.3.4])"))
    assert engine.scan(forged).rule_names == []


def test_shifted_date_uses_the_smallest_shift_against_the_handover_and_oldest_received(
        tmp_path):
    (tmp_path / "r.cf").write_text(
        "header PAST_06_12 eval:check_for_shifted_date('-12', '-6')\n")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    top = ("Received: from localhost (localhost [127.0.0.1]) by mx.example.test id A; "
           "Fri, 6 Sep 2002 11:41:50 +0000")
    hop = ("Received: from relay.example.org (relay.example.org [1.2.3.4]) by "
           "mx.example.test id B; Fri, 6 Sep 2002 11:40:00 +0000")
    old = ("Received: from pc (pc.example.org [5.6.7.8]) by relay.example.org id C; "
           "{when}")
    date = "Date: Fri, 6 Sep 2002 02:00:00 +0000"
    # queued 9 h at the relay, but the sender's own server agrees with Date: — no shift
    queued = msg(top, hop, old.format(when="Fri, 6 Sep 2002 02:00:05 +0000"), date)
    assert engine.scan(queued).rule_names == []
    # every reference point is 9-10 hours after Date:
    shifted = msg(top, hop, old.format(when="Fri, 6 Sep 2002 11:00:00 +0000"), date)
    assert engine.scan(shifted).rule_names == ["PAST_06_12"]
