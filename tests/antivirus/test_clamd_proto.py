"""The clamd protocol core without sockets: byte-exact transcripts and fuzz."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.antivirus.clamd_proto import (
    NEED_DATA,
    UNKNOWN_REPLY,
    ClamdConnection,
    Command,
    ProtocolError,
    SessionEnd,
    StreamComplete,
    StreamTooLong,
    format_result,
)


def events(conn: ClamdConnection, data: bytes) -> list:
    conn.receive_data(data)
    out = []
    while (ev := conn.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, (ProtocolError, SessionEnd, StreamTooLong)):
            break
    return out


def chunks(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts) + b"\0\0\0\0"


@pytest.mark.parametrize("wire,name,argument,terminator", [
    (b"zPING\0", "PING", "", b"\0"),
    (b"nPING\n", "PING", "", b"\n"),
    (b"PING\n", "PING", "", b"\n"),
    (b"PING\r\n", "PING", "", b"\n"),
    (b"nVERSION\n", "VERSION", "", b"\n"),
    (b"zSCAN /tmp/some file\0", "SCAN", "/tmp/some file", b"\0"),
    (b"nCONTSCAN /a\n", "CONTSCAN", "/a", b"\n"),
    (b"zMULTISCAN /a\0", "MULTISCAN", "/a", b"\0"),
    (b"zALLMATCHSCAN /a\0", "ALLMATCHSCAN", "/a", b"\0"),
    (b"nRELOAD\n", "RELOAD", "", b"\n"),
])
def test_commands(wire, name, argument, terminator):
    (ev,) = events(ClamdConnection(), wire)
    assert ev == Command(name, argument, None, terminator)


def test_command_split_across_reads():
    conn = ClamdConnection()
    assert events(conn, b"zPI") == []
    assert events(conn, b"NG\0") == [Command("PING", "", None, b"\0")]


def test_instream_in_chunks():
    conn = ClamdConnection()
    wire = b"zINSTREAM\0" + chunks(b"hello ", b"world")
    got = []
    for i in range(len(wire)):  # one byte at a time
        got += events(conn, wire[i:i + 1])
    assert got == [StreamComplete(b"hello world", None, b"\0")]


def test_instream_over_stream_max_length_is_refused():
    conn = ClamdConnection(stream_max_length=10)
    (ev,) = events(conn, b"zINSTREAM\0" + chunks(b"123456", b"7890123"))
    assert isinstance(ev, StreamTooLong)
    assert conn.reply(ev, "INSTREAM size limit exceeded. ERROR") == \
        b"INSTREAM size limit exceeded. ERROR\0"
    assert conn.closed


def test_session_numbers_replies_and_end_closes():
    conn = ClamdConnection()
    evs = events(conn, b"zIDSESSION\0zPING\0zINSTREAM\0" + chunks(b"x") + b"zVERSION\0")
    assert [type(e) for e in evs] == [Command, StreamComplete, Command]
    assert [e.request_id for e in evs] == [1, 2, 3]
    assert conn.reply(evs[0], "PONG") == b"1: PONG\0"
    assert conn.reply(evs[1], format_result("stream", ("Eicar",))) == b"2: stream: Eicar FOUND\0"
    assert conn.keep_open
    assert events(conn, b"zEND\0") == [SessionEnd()]
    assert not conn.keep_open


def test_one_shot_connection_closes_after_reply():
    conn = ClamdConnection()
    (ev,) = events(conn, b"nPING\n")
    assert conn.reply(ev, "PONG") == b"PONG\n" and not conn.keep_open


@pytest.mark.parametrize("wire,message", [
    (b"zFROB\0", UNKNOWN_REPLY),
    (b"nSCAN\n", "SCAN needs a path"),
    (b"zIDSESSION\0PING\n", "only z or n"),
    (b"zIDSESSION\0zIDSESSION\0", "already in a session"),
    (b"z" + b"A" * 5000, "command too long"),
])
def test_protocol_errors(wire, message):
    evs = events(ClamdConnection(), wire)
    assert isinstance(evs[-1], ProtocolError) and message in evs[-1].message


def test_allmatch_result_lines():
    assert format_result("f", ("A", "B"), allmatch=True) == ["f: A FOUND", "f: B FOUND"]
    assert format_result("f", ("A", "B")) == ["f: A FOUND"]
    assert format_result("f", ()) == ["f: OK"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_arbitrary_bytes_only_yield_protocol_events(pieces):
    conn = ClamdConnection(stream_max_length=256)
    for piece in pieces:
        for ev in events(conn, piece):
            assert isinstance(ev, (Command, StreamComplete, StreamTooLong, SessionEnd,
                                   ProtocolError))
            conn.reply(ev, "x")
