"""The sans-I/O POP3 core: table-driven transcripts, wire form of messages, and fuzzing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.pop3 import proto
from mailyard.pop3.proto import (
    CLOSED,
    NEED_DATA,
    Dele,
    List,
    Login,
    Noop,
    Quit,
    Retr,
    Rset,
    ServerProtocol,
    Stat,
    State,
    Stls,
    TooManyErrors,
    Top,
    Uidl,
)


def fresh(**kw) -> ServerProtocol:
    p = ServerProtocol(**kw)
    assert p.data_to_send() == b"+OK " + proto.GREETING.encode() + b"\r\n"
    return p


def feed(p: ServerProtocol, data: bytes) -> tuple[list, bytes]:
    p.receive_data(data)
    events = []
    while True:
        ev = p.next_event()
        if ev is NEED_DATA or ev is CLOSED:
            break
        events.append(ev)
    return events, p.data_to_send()


def in_transaction(**kw) -> ServerProtocol:
    p = fresh(**kw)
    events, _ = feed(p, b"USER u\r\nPASS p\r\n")
    assert events == [Login("u", "p", "USER")]
    p.login_succeeded()
    assert p.data_to_send() == b"+OK Logged in.\r\n"
    return p


# -- AUTHORIZATION ------------------------------------------------------------------------
@pytest.mark.parametrize("sent, events, reply", [
    (b"USER alice\r\nPASS secret words\r\n", [Login("alice", "secret words", "USER")],
     b"+OK\r\n"),
    (b"user alice\nPASS x\n", [Login("alice", "x", "USER")], b"+OK\r\n"),
    (b"PASS x\r\n", [], b"-ERR No USER given before PASS.\r\n"),
    (b"USER a\r\nNOOP\r\nPASS x\r\n", [],
     b"+OK\r\n-ERR Command not valid in this state.\r\n-ERR No USER given before PASS.\r\n"),
    (b"USER\r\n", [], b"-ERR Syntax error in arguments.\r\n"),
    (b"STAT\r\n", [], b"-ERR Command not valid in this state.\r\n"),
    (b"XYZZY\r\n", [], b"-ERR Unknown command.\r\n"),
    (b"\r\n", [], b"-ERR Unknown command.\r\n"),
    (b"APOP a 0123456789abcdef0123456789abcdef\r\n", [],
     b"-ERR APOP is not available, use USER/PASS or AUTH PLAIN.\r\n"),
    (b"AUTH PLAIN " + base64.b64encode(b"\0bob\0pw") + b"\r\n",
     [Login("bob", "pw", "PLAIN")], b""),
    (b"AUTH PLAIN " + base64.b64encode(b"bob\0bob\0pw") + b"\r\n",
     [Login("bob", "pw", "PLAIN", "bob")], b""),
    (b"AUTH PLAIN\r\n" + base64.b64encode(b"\0bob\0p w") + b"\r\n",
     [Login("bob", "p w", "PLAIN")], b"+ \r\n"),
    (b"AUTH PLAIN\r\n*\r\n", [], b"+ \r\n-ERR Authentication cancelled.\r\n"),
    (b"AUTH PLAIN !!!\r\n", [], b"-ERR Invalid base64 data.\r\n"),
    (b"AUTH PLAIN =\r\n", [], b"-ERR [AUTH] Authentication failed.\r\n"),
    (b"AUTH CRAM-MD5\r\n", [], b"-ERR Unsupported authentication mechanism.\r\n"),
    (b"AUTH\r\n", [], b"+OK\r\nPLAIN\r\n.\r\n"),
    (b"STLS\r\n", [], b"-ERR TLS is not available.\r\n"),
    (b"QUIT\r\n", [Quit()], b""),
])
def test_authorization_transcripts(sent, events, reply):
    p = fresh()
    got_events, got_reply = feed(p, sent)
    assert got_events == events
    assert got_reply == reply


def test_capa_lists_what_this_connection_may_use():
    p = fresh(tls_available=True, plaintext_allowed=False)
    _, reply = feed(p, b"CAPA\r\n")
    lines = reply.split(b"\r\n")
    assert lines[0] == b"+OK Capability list follows"
    assert b"STLS" in lines and b"USER" not in lines and b"SASL PLAIN" not in lines
    for cap in (b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING",
                b"IMPLEMENTATION mailyard"):
        assert cap in lines
    assert reply.endswith(b"\r\n.\r\n")


def test_plaintext_refused_until_tls():
    p = fresh(tls_available=True, plaintext_allowed=False)
    events, reply = feed(p, b"USER a\r\nAUTH PLAIN AGEAYg==\r\n")
    assert events == []
    assert reply == (b"-ERR [AUTH] " + proto.REPLY_PLAINTEXT_REFUSED.encode() + b"\r\n") * 2
    events, reply = feed(p, b"STLS\r\n")
    assert events == [Stls()] and reply == b"+OK Begin TLS negotiation now.\r\n"
    p.tls_started()
    p.plaintext_allowed = True
    _, reply = feed(p, b"CAPA\r\n")
    assert b"\r\nUSER\r\n" in reply and b"STLS" not in reply


def test_stls_injection_is_discarded():
    """CVE-2011-0411 style: commands pipelined after STLS must not run inside TLS."""
    p = fresh(tls_available=True)
    events, _ = feed(p, b"STLS\r\nUSER evil\r\nPASS evil\r\n")
    assert events == [Stls()]
    p.tls_started()
    events, reply = feed(p, b"")
    assert events == [] and reply == b""
    events, _ = feed(p, b"STLS\r\n")
    assert events == []


# -- TRANSACTION --------------------------------------------------------------------------
@pytest.mark.parametrize("sent, event", [
    (b"STAT\r\n", Stat()), (b"LIST\r\n", List(None)), (b"LIST 3\r\n", List(3)),
    (b"UIDL\r\n", Uidl(None)), (b"uidl 12\r\n", Uidl(12)), (b"RETR 1\r\n", Retr(1)),
    (b"TOP 2 0\r\n", Top(2, 0)), (b"DELE 7\r\n", Dele(7)), (b"NOOP\r\n", Noop()),
    (b"RSET\r\n", Rset()), (b"QUIT\r\n", Quit()),
])
def test_transaction_commands(sent, event):
    p = in_transaction()
    events, reply = feed(p, sent)
    assert events == [event] and reply == b""


@pytest.mark.parametrize("sent", [
    b"RETR\r\n", b"RETR x\r\n", b"RETR -1\r\n", b"RETR +1\r\n", b"RETR 1 2\r\n",
    b"TOP 1\r\n", b"TOP 1 x\r\n", b"LIST 1 2\r\n", b"DELE\r\n", b"STAT 1\r\n",
    b"RETR 12345678901\r\n", b"NOOP x\r\n",
])
def test_transaction_syntax_errors(sent):
    p = in_transaction()
    events, reply = feed(p, sent)
    assert events == [] and reply == b"-ERR Syntax error in arguments.\r\n"


def test_quit_enters_update_and_ignores_what_follows():
    p = in_transaction()
    events, _ = feed(p, b"DELE 1\r\nQUIT\r\nDELE 2\r\n")
    assert events == [Dele(1), Quit()]
    assert p.state is State.UPDATE
    assert p.next_event() is CLOSED


def test_pipelined_commands_come_out_in_order():
    p = in_transaction()
    events, _ = feed(p, b"STAT\r\nLIST\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n")
    assert events == [Stat(), List(None), Retr(1), Retr(2), Quit()]


def test_line_split_across_reads():
    p = in_transaction()
    assert feed(p, b"RE") == ([], b"")
    assert feed(p, b"TR 4\r") == ([], b"")
    assert feed(p, b"\n") == ([Retr(4)], b"")


# -- hostile input ------------------------------------------------------------------------
def test_line_too_long_is_refused_and_the_rest_of_it_dropped():
    p = in_transaction(max_line=64)
    events, reply = feed(p, b"NOOP " + b"x" * 100)
    assert events == [] and reply == b"-ERR Line too long.\r\n"
    events, reply = feed(p, b"y" * 1000 + b"\r\nSTAT\r\n")
    assert events == [Stat()] and reply == b""


def test_line_too_long_with_its_end_in_one_read():
    p = in_transaction(max_line=64)
    events, reply = feed(p, b"NOOP " + b"x" * 100 + b"\r\nNOOP\r\n")
    assert events == [Noop()] and reply == b"-ERR Line too long.\r\n"


def test_too_many_bad_commands_closes():
    p = fresh(max_bad_commands=3)
    events, reply = feed(p, b"BAD\r\n" * 10)
    assert events == [TooManyErrors()]
    assert reply.count(b"-ERR") == 4
    assert reply.endswith(b"-ERR Too many bad commands, closing connection.\r\n")
    assert p.state is State.CLOSED


def test_nul_and_invalid_utf8_are_syntax_errors():
    p = fresh()
    _, reply = feed(p, b"USER a\0b\r\nUSER \xff\r\n")
    assert reply == b"-ERR Syntax error in arguments.\r\n" * 2


def test_application_misuse_raises():
    p = in_transaction()
    with pytest.raises(proto.ProtocolError):
        p.login_succeeded()
    with pytest.raises(proto.ProtocolError):
        p.tls_started()


# -- wire form of messages ----------------------------------------------------------------
@pytest.mark.parametrize("raw, wire", [
    (b"a\nb\n", b"a\r\nb\r\n"),
    (b"a\r\nb\r\n", b"a\r\nb\r\n"),
    (b"a\r\nb\nc", b"a\r\nb\r\nc\r\n"),
    (b".dot\n..two\nmid.dle\n.\n", b"..dot\r\n...two\r\nmid.dle\r\n..\r\n"),
    (b"", b""),
    (b"x\rstray\n", b"x\r\nstray\r\n"),
    (b"a\r\r\nb", b"a\r\n\r\nb\r\n"),
])
def test_wire_message(raw, wire):
    assert proto.wire_message(raw) == wire


@pytest.mark.parametrize("raw, lines, top", [
    (b"H: 1\n\nb1\nb2\nb3\n", 0, b"H: 1\r\n\r\n"),
    (b"H: 1\n\nb1\nb2\nb3\n", 2, b"H: 1\r\n\r\nb1\r\nb2\r\n"),
    (b"H: 1\n\nb1\n", 10, b"H: 1\r\n\r\nb1\r\n"),
    (b"H: 1\nH: 2\n", 3, b"H: 1\r\nH: 2\r\n"),
])
def test_top_of(raw, lines, top):
    assert proto.top_of(raw, lines) == top


def unstuff(wire: bytes) -> bytes:
    """What a client (poplib) reconstructs: lines, one dot removed, CRLF joined."""
    if not wire:
        return b""
    lines = wire[:-2].split(b"\r\n")
    return b"".join((ln[1:] if ln.startswith(b"..") else ln) + b"\r\n" for ln in lines)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400) | st.lists(st.sampled_from(
    [b".", b"\r\n", b"\n", b"\r", b"a", b".\r\n", b"\n.\n"]), max_size=40).map(b"".join))
def test_wire_form_properties(raw):
    wire = proto.wire_message(raw)
    assert proto.wire_size(raw) == len(proto.to_crlf(raw))
    # No line of the body can be mistaken for the terminator.
    assert not wire.startswith(b".\r\n") and b"\r\n.\r\n" not in wire
    # Every LF is part of a CRLF; the client gets the message back, one CRLF per line end.
    assert wire.count(b"\n") == wire.count(b"\r\n")
    assert unstuff(wire) == proto.to_crlf(raw)


command_words = st.sampled_from([b"USER", b"PASS", b"AUTH", b"STLS", b"CAPA", b"QUIT", b"STAT",
                                 b"LIST", b"RETR", b"DELE", b"NOOP", b"RSET", b"TOP", b"UIDL",
                                 b"APOP", b"auth plain", b"*", b"="])
lines = st.lists(st.tuples(command_words, st.binary(max_size=30)).map(
    lambda t: t[0] + b" " + t[1]) | st.binary(max_size=80), max_size=30)


@settings(max_examples=300, deadline=None)
@given(lines, st.booleans(), st.integers(min_value=1, max_value=7))
def test_fuzz_never_raises(chunks, authenticate, split):
    """Arbitrary bytes in any state only ever produce events and replies, never exceptions."""
    p = ServerProtocol(max_line=64, max_bad_commands=50, tls_available=True)
    data = b"\r\n".join(chunks) + b"\r\n"
    for i in range(0, len(data), split):
        p.receive_data(data[i:i + split])
        while True:
            ev = p.next_event()
            if ev is NEED_DATA or ev is CLOSED:
                break
            if isinstance(ev, Login) and authenticate:
                p.login_succeeded()
            elif isinstance(ev, Stls):
                p.tls_started()
            else:
                p.ok()
        out = p.data_to_send()
        assert out == b"" or out.endswith(b"\r\n")
