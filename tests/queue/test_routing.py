"""Routing and back-off: pure functions, table-driven."""

from __future__ import annotations

import pytest

from mailyard.queue.routing import (
    FILTER,
    FINAL,
    HOP_FILTER,
    HOP_LMTP,
    HOP_SMTP,
    Hop,
    domain_of,
    plan,
    retry_delay,
    stage_for,
)

FILTER_AT = "127.0.0.1:10024"
LMTP_AT = "127.0.0.1:24"
LOCAL = {"example.test", "other.test"}


def is_local(domain: str) -> bool:
    return domain in LOCAL


@pytest.mark.parametrize("via, skip_scan, filter_address, expected", [
    ("smtp", False, FILTER_AT, FILTER),
    ("submission", False, FILTER_AT, FILTER),
    ("submissions", False, FILTER_AT, FILTER),
    ("reinject", False, FILTER_AT, FINAL),
    ("internal", False, FILTER_AT, FINAL),          # bounces, redirects, vacation
    ("smtp", True, FILTER_AT, FINAL),               # released from quarantine
    ("smtp", False, "", FINAL),                     # no filter configured
    ("lmtp", False, FILTER_AT, FINAL),
])
def test_stage_for(via, skip_scan, filter_address, expected):
    assert stage_for(via, skip_scan, filter_address) == expected


@pytest.mark.parametrize("stage, recipients, expected", [
    (FILTER, ["a@example.test", "b@example.net"],
     [Hop(HOP_FILTER, FILTER_AT, ("a@example.test", "b@example.net"))]),
    (FINAL, ["a@example.test", "b@other.test"],
     [Hop(HOP_LMTP, LMTP_AT, ("a@example.test", "b@other.test"))]),
    (FINAL, ["x@example.net", "a@example.test", "y@EXAMPLE.NET", "z@example.org"],
     [Hop(HOP_LMTP, LMTP_AT, ("a@example.test",)),
      Hop(HOP_SMTP, "example.net", ("x@example.net", "y@EXAMPLE.NET")),
      Hop(HOP_SMTP, "example.org", ("z@example.org",))]),
    (FINAL, ["postmaster"], [Hop(HOP_LMTP, LMTP_AT, ("postmaster",))]),
    (FINAL, ["a@Example.Test."], [Hop(HOP_LMTP, LMTP_AT, ("a@Example.Test.",))]),
    (FINAL, [], []),
    (FILTER, [], []),
])
def test_plan(stage, recipients, expected):
    assert plan(stage, recipients, is_local, FILTER_AT, LMTP_AT) == expected


@pytest.mark.parametrize("address, domain", [
    ("a@Example.COM", "example.com"), ("a@b@c.test", "c.test"), ("nodomain", ""),
    ('"quoted@local"@x.test', "x.test"), ("a@x.test.", "x.test")])
def test_domain_of(address, domain):
    assert domain_of(address) == domain


@pytest.mark.parametrize("attempts, expected", [
    (0, 0), (1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600), (10**6, 3600)])
def test_retry_delay_doubles_up_to_the_cap(attempts, expected):
    assert retry_delay(attempts, 60, 3600) == expected


def test_dsn_parameters_are_xtext_encoded_for_the_next_hop():
    from mailyard.envelope import Envelope
    from mailyard.queue.records import RecipientState
    from mailyard.queue.smtp_out import dsn_mail_params, dsn_rcpt_params

    rcpt = RecipientState("a@x.test", orcpt="rfc822;a+tag=1@x.test", notify=("SUCCESS",))
    assert dsn_rcpt_params(rcpt) == {"NOTIFY": "SUCCESS", "ORCPT": "rfc822;a+2Btag+3D1@x.test"}
    assert dsn_rcpt_params(RecipientState("a@x.test")) == {}
    env = Envelope(sender="s@x.test", recipients=(), dsn_ret="HDRS", dsn_envid="id+1 2")
    assert dsn_mail_params(env) == {"RET": "HDRS", "ENVID": "id+2B1+202"}
