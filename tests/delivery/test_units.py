"""Table-driven tests of the pure parts: trace headers, the Sieve plan, vacation text."""

import email

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.config import load
from mailyard.delivery.headers import add_trace, header_values, split_message, strip_fields
from mailyard.delivery.notices import vacation_message
from mailyard.delivery.sieve_glue import (
    JUNK,
    DeliveryPlan,
    ScriptCache,
    StoreAction,
    VacationReply,
    is_spam,
    plan_delivery,
)
from mailyard.sieve import SieveContext, SieveEnvelope
from mailyard.sieve.storage import ScriptStore

TRACE = {"sender": "s@remote.test", "delivered_to": "u@example.test", "helo": "mx.remote.test",
             "client_ip": "127.0.0.1", "hostname": "mx.example.test", "session_id": "L1"}


@pytest.mark.parametrize("message, header, body", [
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", b"A: 1\r\nB: 2\r\n", b"\r\nbody\r\n"),
    (b"A: 1\n\nbody\n", b"A: 1\n", b"\nbody\n"),
    (b"A: 1\r\n", b"A: 1\r\n", b""),
    (b"\r\nbody only\r\n", b"", b"\r\nbody only\r\n"),
])
def test_split_message(message, header, body):
    assert split_message(message) == (header, body)


def test_strip_fields_removes_folded_return_path():
    header = b"Return-Path: <a@b>\r\n  continued\r\nSubject: x\r\nreturn-path : <c@d>\r\n"
    assert strip_fields(header, "Return-Path") == b"Subject: x\r\n"


def test_add_trace_order_and_content():
    out = add_trace(b"Return-Path: <forged@x>\r\nSubject: hi\r\n\r\nbody\r\n", when=0, **TRACE)
    parsed = email.message_from_bytes(out)
    assert parsed["Return-Path"] == "<s@remote.test>"
    assert parsed["Delivered-To"] == "u@example.test"
    assert "with LMTP id L1" in parsed["Received"]
    assert out.startswith(b"Return-Path: <s@remote.test>\r\nDelivered-To: u@example.test\r\n")
    assert out.endswith(b"Subject: hi\r\n\r\nbody\r\n")
    assert b"forged" not in out


@given(st.binary(max_size=300))
def test_add_trace_never_raises_and_keeps_the_body(message):
    out = add_trace(message, when=0, **TRACE)
    _, body = split_message(message)
    assert out.endswith(body)
    assert out.startswith(b"Return-Path: <s@remote.test>\r\n")


@pytest.mark.parametrize("message, spam", [
    (b"X-Spam-Flag: YES\r\n\r\nx", True),
    (b"x-spam-flag:   yes  \r\n\r\nx", True),
    (b"X-Spam-Flag: NO\r\n\r\nx", False),
    (b"Subject: X-Spam-Flag: YES\r\n\r\nx", False),
    (b"Subject: s\r\n\r\nX-Spam-Flag: YES\r\n", False),  # in the body: not a header
])
def test_is_spam(message, spam):
    assert is_spam(message) is spam


@pytest.fixture
def settings(tmp_path):
    config = tmp_path / "mailyard.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    return load(str(config))


USER = "u@example.test"
MSG = b"From: a@remote.test\r\nSubject: weekly report\r\n\r\nbody\r\n"


@pytest.mark.parametrize("script, expected", [
    (None, DeliveryPlan()),
    ('require "fileinto";\nfileinto "Reports";\n', DeliveryPlan(stores=(StoreAction("Reports"),))),
    ('require ["fileinto","copy"];\nfileinto :copy "A/B";\n',
     DeliveryPlan(stores=(StoreAction("A.B"), StoreAction("INBOX")))),
    ('require "imap4flags";\naddflag "\\\\Flagged";\n',
     DeliveryPlan(stores=(StoreAction("INBOX", ("\\Flagged",)),))),
    ("discard;\n", DeliveryPlan(stores=())),
    ('redirect "x@remote.test";\n', DeliveryPlan(stores=(), redirects=("x@remote.test",))),
    ('require "reject";\nreject "no";\n', DeliveryPlan(stores=(), reject="no")),
    ('require "ereject";\nereject "never";\n', DeliveryPlan(stores=(), reject="never")),
    ("if true { keep; }", DeliveryPlan()),
])
def test_plan_from_user_script(settings, script, expected):
    if script is not None:
        store = ScriptStore(settings.data_path, USER)
        store.put("s", script)
        store.set_active("s")
    plan = plan_delivery(settings, settings.data_path, USER, MSG,
                         SieveEnvelope(sender="a@remote.test", recipient=USER),
                         SieveContext(user_addresses=(USER,)), ScriptCache())
    assert (plan.stores, plan.redirects, plan.reject) == \
        (expected.stores, expected.redirects, expected.reject)


def test_spam_default_skips_user_script(settings):
    store = ScriptStore(settings.data_path, USER)
    store.put("s", 'redirect "x@remote.test";\n')
    store.set_active("s")
    plan = plan_delivery(settings, settings.data_path, USER, b"X-Spam-Flag: YES\r\n\r\nx",
                         SieveEnvelope(sender="a@remote.test", recipient=USER),
                         SieveContext(user_addresses=(USER,)), ScriptCache())
    assert plan.stores == (StoreAction(JUNK),) and plan.redirects == ()


def test_runtime_limit_keeps_in_inbox(settings):
    store = ScriptStore(settings.data_path, USER)
    store.put("s", "".join(f'redirect "r{i}@remote.test";\n' for i in range(30)))
    store.set_active("s")
    plan = plan_delivery(settings, settings.data_path, USER, MSG,
                         SieveEnvelope(sender="a@remote.test", recipient=USER),
                         SieveContext(user_addresses=(USER,)), ScriptCache())
    assert plan.stores == (StoreAction("INBOX"),) and plan.redirects == ()
    assert plan.notes


def test_vacation_message_headers():
    reply = VacationReply(to="a@remote.test", from_="u@example.test", subject="",
                          reason="Away\nback soon", mime=False, in_reply_to="<m1@remote.test>")
    text = vacation_message(reply, b"Subject: Caf\xc3\xa9 plans\r\n\r\nx", "mx.example.test")
    parsed = email.message_from_bytes(text)
    assert parsed["Auto-Submitted"].startswith("auto-replied")
    assert parsed["In-Reply-To"] == "<m1@remote.test>"
    assert parsed["To"] == "<a@remote.test>"
    assert str(email.header.make_header(email.header.decode_header(parsed["Subject"]))) \
        == "Re: Caf\u00e9 plans"
    assert parsed.get_payload() == "Away\r\nback soon\r\n"
    assert b"\r\n\r\n" in text and b"\n" not in text.replace(b"\r\n", b"")


def test_header_values_unfolds():
    assert header_values(b"To: a,\r\n b\r\nX: 1\r\n\r\n", "to") == ["a, b"]
