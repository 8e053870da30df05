"""Table-driven tests of the server codec: client bytes in, reply codes out."""

from __future__ import annotations

import pytest

from mailyard.smtp import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    CommandError,
    DataEnd,
    Mail,
    Rcpt,
    ServerConnection,
    replies,
)

from .transcript import run

EHLO = b"EHLO client.example\r\n"
TXN = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n"

CASES = [
    # (name, client bytes, expected reply codes)
    ("helo", b"HELO x\r\n", [250]),
    ("ehlo", EHLO, [250]),
    ("helo_no_arg", b"HELO\r\n", [501]),
    ("unknown_verb", b"FOO bar\r\n", [500]),
    ("bdat_not_implemented", EHLO + b"BDAT 10 LAST\r\n", [250, 502]),
    ("lhlo_in_smtp", b"LHLO x\r\n", [500]),
    ("mail_before_helo", b"MAIL FROM:<a@b.c>\r\n", [503]),
    ("rcpt_before_mail", EHLO + b"RCPT TO:<a@b.c>\r\n", [250, 503]),
    ("data_before_mail", EHLO + b"DATA\r\n", [250, 503]),
    ("data_no_valid_rcpt", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<refuse@b.c>\r\nDATA\r\n",
     [250, 250, 550, 554]),
    ("nested_mail", EHLO + b"MAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n", [250, 250, 503]),
    ("mail_null_sender", EHLO + b"MAIL FROM:<>\r\n", [250, 250]),
    ("mail_space_after_colon", EHLO + b"MAIL FROM: <a@b.c>\r\n", [250, 250]),
    ("mail_lowercase", EHLO + b"mail from:<a@b.c>\r\n", [250, 250]),
    ("mail_no_brackets", EHLO + b"MAIL FROM:a@b.c\r\n", [250, 501]),
    ("mail_no_from", EHLO + b"MAIL <a@b.c>\r\n", [250, 501]),
    ("mail_unknown_param", EHLO + b"MAIL FROM:<a@b.c> FOO=bar\r\n", [250, 555]),
    ("mail_bad_size", EHLO + b"MAIL FROM:<a@b.c> SIZE=abc\r\n", [250, 501]),
    ("mail_body_8bit", EHLO + b"MAIL FROM:<a@b.c> BODY=8BITMIME\r\n", [250, 250]),
    ("mail_body_binary", EHLO + b"MAIL FROM:<a@b.c> BODY=BINARYMIME\r\n", [250, 504]),
    ("mail_dup_param", EHLO + b"MAIL FROM:<a@b.c> SIZE=1 SIZE=2\r\n", [250, 501]),
    ("mail_dsn", EHLO + b"MAIL FROM:<a@b.c> RET=HDRS ENVID=abc+2B1\r\n", [250, 250]),
    ("mail_utf8_without_smtputf8", EHLO + "MAIL FROM:<jürgen@b.c>\r\n".encode(), [250, 553]),
    ("mail_utf8_with_smtputf8", EHLO + "MAIL FROM:<jürgen@b.c> SMTPUTF8\r\n".encode(),
     [250, 250]),
    ("rcpt_utf8_needs_mail_smtputf8",
     EHLO + b"MAIL FROM:<a@b.c>\r\n" + "RCPT TO:<ü@b.c>\r\n".encode(), [250, 250, 553]),
    ("rcpt_postmaster", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<Postmaster>\r\n",
     [250, 250, 250]),
    ("rcpt_notify", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c> NOTIFY=SUCCESS,FAILURE "
     b"ORCPT=rfc822;x+40b.c\r\n", [250, 250, 250]),
    ("rcpt_bad_notify", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c> NOTIFY=NEVER,DELAY\r\n",
     [250, 250, 501]),
    ("rcpt_trailing_dot", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c.>\r\n",
     [250, 250, 501]),
    ("rcpt_double_at", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@local@remote>\r\n",
     [250, 250, 501]),
    ("data_with_arg", EHLO + b"MAIL FROM:<a@b.c>\r\nRCPT TO:<x@b.c>\r\nDATA x\r\n",
     [250, 250, 250, 501]),
    ("full_transaction", EHLO + TXN + b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n",
     [250, 250, 250, 354, 250, 221]),
    ("rset_then_new_mail", EHLO + b"MAIL FROM:<a@b.c>\r\nRSET\r\nMAIL FROM:<a@b.c>\r\n",
     [250, 250, 250, 250]),
    ("ehlo_resets_transaction", EHLO + b"MAIL FROM:<a@b.c>\r\n" + EHLO +
     b"MAIL FROM:<a@b.c>\r\n", [250, 250, 250, 250]),
    ("rset_with_arg", b"RSET x\r\n", [501]),
    ("noop_with_arg", b"NOOP anything\r\n", [250]),
    ("quit_stops_parsing", b"QUIT\r\nNOOP\r\n", [221]),
    ("vrfy", b"VRFY postmaster\r\n", [252]),
    ("vrfy_no_arg", b"VRFY\r\n", [501]),
    ("auth_before_ehlo", b"AUTH PLAIN AGFAYg==\r\n", [503]),
    ("auth_after_helo", b"HELO x\r\nAUTH PLAIN AGFAYg==\r\n", [250, 503]),
    ("auth_initial", EHLO + b"AUTH PLAIN AGFAYg==\r\n", [250, 235]),
    ("auth_twice", EHLO + b"AUTH PLAIN AGFAYg==\r\nAUTH PLAIN AGFAYg==\r\n", [250, 235, 503]),
    ("auth_exchange", EHLO + b"AUTH LOGIN\r\ndXNlcg==\r\n", [250, 334, 235]),
    ("auth_cancel", EHLO + b"AUTH LOGIN\r\n*\r\nNOOP\r\n", [250, 334, 501, 250]),
    ("auth_in_transaction", EHLO + b"MAIL FROM:<a@b.c>\r\nAUTH PLAIN AGFAYg==\r\n",
     [250, 250, 503]),
    ("starttls_with_arg", EHLO + b"STARTTLS now\r\n", [250, 501]),
    ("starttls_in_transaction", EHLO + b"MAIL FROM:<a@b.c>\r\nSTARTTLS\r\n", [250, 250, 503]),
    ("nul_in_command", b"HELO a\x00b\r\n", [500]),
    ("invalid_utf8", b"HELO \xff\xfe\r\n", [500]),
    ("bare_lf_command", b"HELO x\n", [500]),
    ("bare_cr_in_command", b"HELO x\ry\r\n", [500]),
]


@pytest.mark.parametrize("name,data,codes", CASES, ids=[c[0] for c in CASES])
def test_reply_codes(name, data, codes):
    assert run(data).codes == codes


@pytest.mark.parametrize("name,data,codes", CASES, ids=[c[0] for c in CASES])
def test_reply_codes_byte_by_byte(name, data, codes):
    """Pipelining must not depend on how TCP cut the stream."""
    assert run([data[i:i + 1] for i in range(len(data))]).codes == codes


def test_message_content_is_unstuffed():
    t = run(EHLO + TXN + b"..leading dot\r\n..\r\n\r\nlast\r\n.\r\n")
    assert t.messages == [b".leading dot\r\n.\r\n\r\nlast\r\n"]


def test_empty_message():
    t = run(EHLO + TXN + b".\r\n")
    assert t.messages == [b""]
    assert t.codes[-1] == 250


def test_greeting_and_multiline_reply_format():
    conn = ServerConnection()
    assert conn.reply(220, None, "mx.example ESMTP") == b"220 mx.example ESMTP\r\n"
    conn.receive_data(EHLO)
    conn.next_event()
    out = conn.reply(250, None, ["mx.example", "PIPELINING", "SIZE 1000"])
    assert out == b"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"
    conn.receive_data(b"MAIL FROM:<a@b.c>\r\n")
    conn.next_event()
    assert conn.respond(replies.SENDER_OK) == b"250 2.1.0 Ok\r\n"


def test_reply_text_cannot_inject_lines():
    conn = ServerConnection()
    assert conn.reply(220, None, ["a\r\n250 evil"]) == b"220 a  250 evil\r\n"


def test_paused_until_reply():
    conn = ServerConnection()
    conn.receive_data(EHLO + b"NOOP\r\n")
    assert conn.next_event().domain == "client.example"
    assert conn.next_event() is PAUSED
    conn.reply(250, None, "x")
    assert conn.next_event() is not PAUSED


def test_mail_event_fields():
    t = run(EHLO + b"MAIL FROM:<@relay.example,@r2.example:user@example.org> SIZE=100 "
            b"BODY=8BITMIME\r\n")
    mail = next(e for e in t.events if isinstance(e, Mail))
    assert mail.address == "user@example.org"
    assert mail.path.route == ("relay.example", "r2.example")
    assert mail.params == {"SIZE": "100", "BODY": "8BITMIME"}


def test_size_announced_too_big():
    t = run(EHLO + b"MAIL FROM:<a@b.c> SIZE=1001\r\n", max_message_size=1000)
    assert t.codes == [250, 552]
    assert b"552 5.3.4" in t.output


def test_size_exceeded_in_data():
    body = b"x" * 2000 + b"\r\n"
    t = run(EHLO + TXN + body + b".\r\nQUIT\r\n", max_message_size=1000)
    assert t.codes == [250, 250, 250, 354, 552, 221]
    assert t.messages == []
    assert t.refused == [replies.MESSAGE_TOO_BIG]


def test_line_too_long_then_recovers():
    t = run(b"NOOP " + b"x" * 5000 + b"\r\nNOOP\r\n", max_line_length=1000)
    assert t.codes == [500, 250]
    assert b"5.5.6" in t.output


def test_line_too_long_in_one_packet():
    t = run(b"HELO " + b"x" * 2000 + b"\r\nNOOP\r\n", max_line_length=1000)
    assert t.codes == [500, 250]


def test_bare_lf_command_accepted_when_normalizing():
    t = run(b"EHLO x\nMAIL FROM:<a@b.c>\n", bare_newlines="normalize")
    assert t.codes == [250, 250]


def test_lmtp_one_reply_per_accepted_recipient():
    data = (b"LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<one@b.c>\r\nRCPT TO:<refuse@b.c>\r\n"
            b"RCPT TO:<two@b.c>\r\nDATA\r\nhello\r\n.\r\nNOOP\r\n")
    t = run(data, lmtp=True)
    assert t.codes == [250, 250, 250, 550, 250, 354, 250, 250, 250]
    assert t.messages == [b"hello\r\n"]


def test_lmtp_refuses_ehlo():
    assert run(b"EHLO x\r\n", lmtp=True).codes == [500]


def test_lmtp_recipients_listed_in_order():
    conn = ServerConnection(lmtp=True)
    run(b"LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<one@b.c>\r\nRCPT TO:<two@b.c>\r\nDATA\r\n",
        conn=conn)
    assert [p.address for p in conn.recipients] == ["one@b.c", "two@b.c"]
    conn.receive_data(b"x\r\n.\r\n")
    assert conn.next_event().data == b"x\r\n"
    end = conn.next_event()
    assert isinstance(end, DataEnd)
    conn.respond(replies.OK)
    assert conn.next_event() is PAUSED         # one more recipient to answer
    conn.respond(replies.OK)
    assert conn.next_event() is NEED_DATA
    assert conn.state == "ready"


def test_starttls_discards_pipelined_plaintext():
    """CVE-2011-0411: commands sent in the clear after STARTTLS must not be executed."""
    t = run(EHLO + b"STARTTLS\r\nMAIL FROM:<evil@x.y>\r\nRCPT TO:<v@x.y>\r\n")
    assert t.codes == [250, 220]
    assert not any(isinstance(e, (Mail, Rcpt)) for e in t.events)
    assert t.conn.tls and t.conn.state == "greeting"


def test_starttls_when_tls_already():
    assert run(EHLO + b"STARTTLS\r\n", tls=True).codes == [250, 503]


def test_auth_response_event():
    t = run(EHLO + b"AUTH LOGIN\r\ndXNlcg==\r\n")
    assert isinstance(t.events[1], Auth) and t.events[1].initial is None
    assert t.events[2] == AuthResponse("dXNlcg==")
    assert t.conn.authenticated


def test_auth_equals_means_empty_initial():
    t = run(EHLO + b"AUTH PLAIN =\r\n")
    assert t.events[1] == Auth("PLAIN", "")


def test_421_closes():
    conn = ServerConnection()
    conn.receive_data(b"NOOP\r\n")
    conn.reply(421, "4.3.2", "shutting down")
    assert conn.state == "closed"
    assert conn.next_event() is NEED_DATA


def test_command_error_carries_verb():
    t = run(b"MAIL FROM:<a@b.c>\r\n")
    assert isinstance(t.events[0], CommandError) and t.events[0].command == "MAIL"


def test_enhanced_codes_can_be_turned_off():
    t = run(b"FOO\r\n", enhanced_status_codes=False)
    assert t.output.startswith(b"500 Syntax")
