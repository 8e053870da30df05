"""DSN format (RFC 3464), checked by parsing the output back with the email package."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.envelope import Envelope, Recipient
from mailyard.queue import dsn
from mailyard.queue.records import RecipientState, Reply

ORIGINAL = (b"From: alice@example.test\r\nTo: bob@example.net\r\nSubject: lunch\r\n"
            b"Message-ID: <orig@example.test>\r\n\r\nSee you at noon.\r\n")


def failed(address="bob@example.net", reply=None, **kw) -> dsn.ReportedRecipient:
    state = RecipientState(address=address, reply=reply or Reply(
        550, "No such user here", "5.1.1", "mx.example.net"), **kw)
    return dsn.ReportedRecipient(state, dsn.FAILED)


def build(envelope=None, reported=None, message=ORIGINAL) -> email.message.Message:
    envelope = envelope or Envelope(sender="alice@example.test",
                                    recipients=(Recipient("bob@example.net"),))
    raw = dsn.build_dsn(envelope, message, reported or [failed()], "mx.example.test",
                        arrival=1_700_000_000, queue_id="Q123", now=1_700_000_100)
    assert b"\n" not in raw.replace(b"\r\n", b"")        # CRLF throughout
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_failed_dsn_structure():
    msg = build()
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["To"].addresses[0].addr_spec == "alice@example.test"
    assert msg["Auto-Submitted"] == "auto-replied"
    human, status, original = msg.get_payload()
    assert human.get_content_type() == "text/plain"
    assert "550 5.1.1 No such user here" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.test"
    assert per_message["Arrival-Date"]
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 No such user here"
    assert original.get_content_type() == "message/rfc822"
    assert original.get_payload()[0]["Message-ID"] == "<orig@example.test>"


def test_ret_hdrs_returns_only_the_headers():
    msg = build(Envelope(sender="a@example.test", recipients=(), dsn_ret="HDRS"))
    part = msg.get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert b"See you at noon" not in part.as_bytes()
    assert "Subject: lunch" in part.get_content()


def test_envid_and_orcpt_are_reported():
    msg = build(Envelope(sender="a@example.test", recipients=(), dsn_envid="ENV-1"),
                [failed(orcpt="rfc822;Bob@Example.NET")])
    per_message, per_rcpt = msg.get_payload()[1].get_payload()
    assert per_message["Original-Envelope-Id"] == "ENV-1"
    assert per_rcpt["Original-Recipient"] == "rfc822; Bob@Example.NET"


def test_several_recipients_each_get_a_block():
    msg = build(reported=[failed("b@example.net"),
                          failed("c@example.net", Reply(552, "Mailbox full", "5.2.2"))])
    blocks = msg.get_payload()[1].get_payload()[1:]
    assert [b["Final-Recipient"] for b in blocks] == ["rfc822; b@example.net",
                                                      "rfc822; c@example.net"]
    assert blocks[1]["Status"] == "5.2.2"
    assert "Remote-MTA" not in blocks[1]                 # our own verdict, no remote
    assert blocks[1]["Diagnostic-Code"].startswith("X-mailyard;")


def test_delay_warning_has_will_retry_until_and_headers_only():
    state = RecipientState(address="b@example.net", reply=Reply(451, "greylisted", "4.7.1",
                                                                "mx.example.net"))
    msg = build(reported=[dsn.ReportedRecipient(state, dsn.DELAYED, 1_700_432_000)])
    assert "Delayed" in msg["Subject"]
    block = msg.get_payload()[1].get_payload()[1]
    assert block["Action"] == "delayed"
    assert block["Will-Retry-Until"]
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_huge_original_is_returned_as_headers_only():
    big = ORIGINAL + b"x" * (dsn.MAX_RETURNED + 10) + b"\r\n"
    msg = build(message=big)
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_multiline_remote_reply_cannot_inject_headers():
    reply = Reply(550, "first line\r\nX-Injected: yes\nsecond", "5.0.0", "mx\r\nBad: 1")
    msg = build(reported=[failed(reply=reply)])
    block = msg.get_payload()[1].get_payload()[1]
    assert "X-Injected" not in block
    assert "Bad" not in block
    assert "first line X-Injected: yes second" in block["Diagnostic-Code"]


def test_dsn_envelope_is_from_the_null_sender_and_internal():
    env = dsn.dsn_envelope(Envelope(sender="a@example.test", recipients=()), 5.0)
    assert env.sender == ""
    assert [r.address for r in env.recipients] == ["a@example.test"]
    assert env.received_via == "internal"


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=200), message=st.binary(max_size=500))
def test_any_reply_text_and_message_give_a_parseable_report(text, message):
    msg = build(reported=[failed(reply=Reply(554, text, "", "mx"))], message=message)
    assert msg.get_content_type() == "multipart/report"
    assert len(msg.get_payload()) == 3
    assert msg.get_payload()[1].get_payload()[1]["Action"] == "failed"
