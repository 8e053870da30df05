"""SMTP smuggling (CVE-2023-51764 / CVE-2023-51765 / CVE-2023-51766 class).

A message must end at `<CR><LF>.<CR><LF>` and nowhere else: every variant below, sent in the
middle of DATA, must neither end the message early nor let the text after it run as
commands. In "reject" mode the whole message is refused at its real end; in "normalize"
mode it is kept, with the bare newlines turned into CRLF and the smuggled "end" neutered.
"""

from __future__ import annotations

import pytest

from mailyard.smtp import Mail, Rcpt, replies

from .transcript import run

EHLO = b"EHLO attacker.example\r\n"
TXN = b"MAIL FROM:<a@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
SMUGGLED = (b"MAIL FROM:<admin@example.net>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\n"
            b"Subject: smuggled\r\n\r\nforged\r\n")

# The end-of-data look-alikes from the SEC Consult advisory and the Postfix/Sendmail/Exim
# follow-ups.
VARIANTS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_dot_cr": b"\r\n.\r",
    "crlf_dot_cr_cr_lf": b"\r\n.\r\r\n",
    "lf_dot_cr_lf": b"\n.\r\n",
    "cr_lf_dot_lf_crlf": b"\r\n.\n\r\n",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
}


def payload(variant: bytes) -> bytes:
    return (EHLO + TXN + b"Subject: real\r\n\r\nhello" + variant + SMUGGLED +
            b".\r\nQUIT\r\n")


def count_mail_events(transcript) -> int:
    return sum(isinstance(e, Mail) for e in transcript.events)


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_reject_mode(variant):
    t = run(payload(variant), bare_newlines="reject")
    assert count_mail_events(t) == 1, "the smuggled MAIL FROM ran as a command"
    assert sum(isinstance(e, Rcpt) for e in t.events) == 1
    if b"\x00" in variant:   # no bare newline: a legitimate (odd) message, kept whole
        assert len(t.messages) == 1 and SMUGGLED in t.messages[0]
        assert t.codes == [250, 250, 250, 354, 250, 221]
    else:
        assert t.messages == []
        assert t.refused == [replies.BARE_NEWLINE_DATA]
        assert t.codes == [250, 250, 250, 354, 554, 221]


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_normalize_mode(variant):
    t = run(payload(variant), bare_newlines="normalize")
    assert count_mail_events(t) == 1
    assert len(t.messages) == 1
    message = t.messages[0]
    # Everything is one message, with CRLF-only line endings...
    assert b"Subject: smuggled" in message
    assert b"\r" not in message.replace(b"\r\n", b"")
    assert b"\n" not in message.replace(b"\r\n", b"")
    # ...and re-sending it cannot end DATA early downstream.
    from mailyard.smtp import dot_stuff
    stuffed = dot_stuff(message)
    assert stuffed.count(b"\r\n.\r\n") == 1 and stuffed.endswith(b"\r\n.\r\n")
    assert t.codes == [250, 250, 250, 354, 250, 221]


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_smuggling_split_across_packets(variant):
    data = payload(variant)
    t = run([data[i:i + 3] for i in range(0, len(data), 3)])
    assert count_mail_events(t) == 1


def test_smuggling_bare_lf_in_command_refused():
    t = run(EHLO + b"MAIL FROM:<a@b.c>\nRCPT TO:<x@y.z>\r\n")
    assert t.codes == [250, 500, 503]
