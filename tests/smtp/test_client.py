"""The client codec, against byte-exact server replies and against our server codec."""

from __future__ import annotations

import pytest

from mailyard.smtp import NEED_DATA, ClientConnection, ProtocolError, ServerConnection

from .transcript import Transcript, respond


def answers(client: ClientConnection, data: bytes) -> list:
    client.receive_data(data)
    out = []
    while (a := client.next_answer()) is not NEED_DATA:
        out.append(a)
    return out


def test_greeting_and_ehlo_extensions():
    client = ClientConnection()
    [greeting] = answers(client, b"220 mx.example ESMTP\r\n")
    assert greeting.command == "GREETING" and greeting.code == 220
    assert client.hello("me.example") == b"EHLO me.example\r\n"
    [ehlo] = answers(client, b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n"
                             b"250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n")
    assert ehlo.ok
    assert client.extensions == {"PIPELINING": "", "SIZE": "1000", "AUTH": "PLAIN LOGIN",
                                 "ENHANCEDSTATUSCODES": ""}
    assert client.supports("pipelining")


def test_enhanced_code_parsed_and_stripped():
    client = ClientConnection()
    answers(client, b"220 x\r\n")
    client.rcpt("a@b.c")
    [a] = answers(client, b"550-5.1.1 no such\r\n550 5.1.1 user here\r\n")
    assert a.reply.enhanced == "5.1.1"
    assert a.reply.lines == ("no such", "user here")
    assert a.recipient == "a@b.c"
    assert client.accepted_recipients == []


def test_mismatched_enhanced_class_not_taken():
    client = ClientConnection()
    [a] = answers(client, b"220 2.0.0x ready\r\n")
    assert a.reply.enhanced is None


@pytest.mark.parametrize("bad", [b"hello\r\n", b"99 x\r\n", b"250-a\r\n251 b\r\n",
                                 b"600 no\r\n"])
def test_malformed_replies(bad):
    client = ClientConnection()
    with pytest.raises(ProtocolError):
        answers(client, bad)


def test_unexpected_reply_is_error_but_421_is_not():
    client = ClientConnection()
    answers(client, b"220 x\r\n")
    [a] = answers(client, b"421 4.3.2 bye\r\n")
    assert a.command == "" and client.closed
    with pytest.raises(ProtocolError):
        answers(ClientConnection(), b"220 x\r\n250 surprise\r\n")


def converse(lmtp: bool, recipients: list[str], content: bytes):
    """Run our client codec against our server codec, fully pipelined."""
    server = ServerConnection(lmtp=lmtp)
    client = ClientConnection(lmtp=lmtp)
    transcript, current = Transcript(), []

    def serve(data: bytes) -> bytes:
        server.receive_data(data)
        out = b""
        while True:
            event = server.next_event()
            if event is NEED_DATA:
                return out
            if type(event).__name__ == "DataChunk":
                current.append(event.data)
                continue
            out += respond(server, event, transcript, current)

    got = answers(client, server.reply(220, None, "mx ready"))
    wire = client.hello("c") + client.mail("s@x.y", {"BODY": "8BITMIME"})
    for r in recipients:
        wire += client.rcpt(r)
    wire += client.data()
    got += answers(client, serve(wire))
    assert got[-1].code == 354
    wire = client.send_content(content) + client.end_content() + client.quit()
    got += answers(client, serve(wire))
    return got, transcript


def test_smtp_client_against_server_codec():
    got, transcript = converse(False, ["a@x.y", "refuse@x.y", "b@x.y"], b".hi\n.\nthere")
    assert [(a.command, a.code) for a in got] == [
        ("GREETING", 220), ("EHLO", 250), ("MAIL", 250), ("RCPT", 250), ("RCPT", 550),
        ("RCPT", 250), ("DATA", 354), ("DATA-END", 250), ("QUIT", 221)]
    assert transcript.messages == [b".hi\r\n.\r\nthere\r\n"]


def test_lmtp_client_gets_one_answer_per_recipient():
    got, transcript = converse(True, ["a@x.y", "refuse@x.y", "b@x.y"], b"body\r\n")
    ends = [(a.recipient, a.code) for a in got if a.command == "DATA-END"]
    assert ends == [("a@x.y", 250), ("b@x.y", 250)]
    assert got[1].command == "LHLO"
    assert transcript.messages == [b"body\r\n"]


def test_starttls_forgets_extensions():
    client = ClientConnection()
    answers(client, b"220 x\r\n")
    client.hello("c")
    answers(client, b"250-x\r\n250 STARTTLS\r\n")
    client.starttls()
    answers(client, b"220 go\r\n")
    assert client.extensions == {}


def test_command_injection_refused():
    with pytest.raises(ValueError):
        ClientConnection().mail("a@b.c>\r\nRCPT TO:<x@y.z")
