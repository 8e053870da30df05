"""Header surgery and per-recipient policy (pure)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.filter.headers import get_header, rewrite, split_message
from mailyard.filter.policy import FilterPolicy, decide, scan_headers
from mailyard.filter.verdicts import AttachmentSeen, RuleHit, ScanResult

MSG = (b"Received: from a\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No,\r\n  score=-100\r\n"
       b"Subject: hi there\r\nx-virus-scanned: forged\r\nFrom: a@b.test\r\n\r\n"
       b"X-Spam-Flag: this is body text\r\n")


def test_forged_scan_headers_removed_and_ours_added():
    out = rewrite(MSG, [("X-Spam-Flag", "YES"), ("X-Virus-Scanned", "mailyard")])
    head, _, body = split_message(out)
    assert get_header(out, "X-Spam-Flag") == ["YES"]
    assert get_header(out, "X-Virus-Scanned") == ["mailyard"]
    assert get_header(out, "X-Spam-Status") == []
    assert b"score=-100" not in head
    assert body == b"X-Spam-Flag: this is body text\r\n"  # the body is never touched
    assert get_header(out, "Received") == ["from a"]


def test_subject_tag_once():
    out = rewrite(MSG, [], subject_prefix="***SPAM*** ")
    assert get_header(out, "Subject") == ["***SPAM*** hi there"]
    again = rewrite(out, [], subject_prefix="***SPAM*** ")
    assert get_header(again, "Subject") == ["***SPAM*** hi there"]


def test_lf_only_message_keeps_its_line_endings():
    msg = b"Subject: x\nX-Spam-Flag: NO\n\nbody\n"
    out = rewrite(msg, [("X-Spam-Flag", "YES")])
    assert out == b"X-Spam-Flag: YES\nSubject: x\n\nbody\n"


def test_headers_only_message():
    out = rewrite(b"Subject: only headers\r\n", [("X-A", "1")])
    assert out.startswith(b"X-A: 1\r\nSubject: only headers\r\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_rewrite_never_raises_and_keeps_body(raw):
    out = rewrite(raw, [("X-Spam-Flag", "NO")])
    _, _, body = split_message(raw)
    assert out.endswith(body)


POLICY = FilterPolicy(spam_level=5.0, kill_level=15.0, banned_extensions=frozenset({"exe"}),
                      bypass_spam=frozenset({"@lenient.test"}))


def test_virus_quarantines():
    d = decide(POLICY, ScanResult(infected=True, virus_names=("Eicar-Test-Signature",)),
               "a@x.test")
    assert (d.action, d.reason, d.detail) == ("quarantine", "virus", "Eicar-Test-Signature")


def test_banned_attachment_inside_archive_quarantines():
    r = ScanResult(spam_checked=True, attachments=(
        AttachmentSeen("docs.zip", "application/zip"), AttachmentSeen("run.EXE", "", "pe", 1)))
    assert decide(POLICY, r, "a@x.test").reason == "banned"


def test_spam_levels():
    ham = ScanResult(spam_checked=True, score=1.0)
    spam = ScanResult(spam_checked=True, score=7.0, hits=(RuleHit("GTUBE", 7.0),))
    kill = ScanResult(spam_checked=True, score=30.0)
    assert decide(POLICY, ham, "a@x.test").spam_flag is False
    d = decide(POLICY, spam, "a@x.test")
    assert (d.action, d.spam_flag, d.tag_subject) == ("deliver", True, True)
    assert decide(POLICY, kill, "a@x.test").action == "quarantine"
    assert decide(POLICY, kill, "b@lenient.test").action == "deliver"


def test_spamassassin_compatible_headers():
    r = ScanResult(spam_checked=True, score=7.25, hits=(RuleHit("B_RULE", 5), RuleHit("A", 2.25)),
                   autolearn="no")
    fields = dict(scan_headers(r, decide(POLICY, r, "a@x.test")))
    assert fields["X-Spam-Flag"] == "YES"
    assert fields["X-Spam-Score"] == "7.2" or fields["X-Spam-Score"] == "7.3"
    assert fields["X-Spam-Level"] == "*******"
    assert fields["X-Spam-Status"].startswith("Yes, score=7.")
    assert fields["X-Spam-Status"].endswith("required=5.0 tests=A,B_RULE autolearn=no")
    assert fields["X-Virus-Scanned"].startswith("mailyard ")


def test_facts_only_from_our_own_authentication_results():
    from mailyard.filter.worker import facts_from_headers

    msg = (b"Authentication-Results: mx.example.test; spf=softfail smtp.mailfrom=a@b.test; "
           b"dkim=fail header.d=b.test; dmarc=fail (p=reject) header.from=b.test\r\n"
           b"Authentication-Results: evil.test; spf=pass; dkim=pass; dmarc=pass\r\n\r\nx\r\n")
    assert facts_from_headers(msg, "mx.example.test") == {
        "spf": "softfail", "dkim": "invalid", "dmarc": "reject"}
    assert facts_from_headers(msg, "other.test") == {}
