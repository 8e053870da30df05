"""Arbitrary bytes never raise anything out of the codecs (only their own errors)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.smtp import NEED_DATA, ClientConnection, ProtocolError, ServerConnection

from .transcript import run

COMMANDS = [b"EHLO x\r\n", b"HELO x\r\n", b"LHLO x\r\n", b"MAIL FROM:<a@b.c>\r\n",
            b"RCPT TO:<d@e.f>\r\n", b"DATA\r\n", b".\r\n", b"RSET\r\n", b"AUTH LOGIN\r\n",
            b"STARTTLS\r\n", b"\r\n", b"\n", b"\r", b".", b"..\r\n", b"\x00", b"\xff"]

wire = st.lists(st.one_of(st.sampled_from(COMMANDS), st.binary(max_size=40)), max_size=25)


@settings(max_examples=300)
@given(wire, st.booleans(), st.sampled_from(["reject", "normalize"]))
def test_server_survives_anything(pieces, lmtp, mode):
    t = run(pieces, lmtp=lmtp, bare_newlines=mode, max_line_length=200,
            max_message_size=500)
    # Every reply the codec produced is well-formed.
    for line in t.output.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-", b"")


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_server_random_bytes_after_each_state(data):
    prefixes = [b"", b"EHLO x\r\n", b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n",
                b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\n",
                b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n",
                b"EHLO x\r\nAUTH LOGIN\r\n"]
    for prefix in prefixes:
        run([prefix, data])


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_client_random_replies(data):
    client = ClientConnection()
    client.receive_data(data)
    try:
        while client.next_answer() is not NEED_DATA:
            pass
    except ProtocolError:
        pass


def test_server_conn_default_construct():
    assert ServerConnection().next_event() is NEED_DATA
