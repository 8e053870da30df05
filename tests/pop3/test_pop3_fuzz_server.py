"""Server-level fuzz: arbitrary bytes in each connection state, over a real socket.

The server must answer only in POP3's own shapes (status lines, multi-line bodies, SASL
continuations), close cleanly at EOF, and keep serving the next client.
"""

from __future__ import annotations

import socket

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3_helpers import PASSWORD, new_user, sample_message

words = st.sampled_from([b"USER x", b"PASS y", b"AUTH PLAIN", b"AUTH PLAIN =", b"*", b"STAT",
                         b"LIST", b"LIST 1", b"RETR 1", b"RETR 99", b"TOP 1 0", b"DELE 1",
                         b"RSET", b"NOOP", b"UIDL", b"CAPA", b"APOP a b", b"", b"."])
junk = st.lists(words | st.binary(max_size=40), max_size=15).map(lambda ls: b"\r\n".join(ls))


def converse(port: int, prefix: bytes, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(prefix + payload)
        s.shutdown(socket.SHUT_WR)  # EOF: the server must end the session by itself
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def check_alive(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        assert s.recv(1024).startswith(b"+OK ")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=junk)
def test_fuzz_authorization_state(pop3_server, payload):
    out = converse(pop3_server.port("pop3"), b"", payload)
    assert out.startswith(b"+OK ") and out.endswith(b"\r\n")
    check_alive(pop3_server.port("pop3"))


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=junk)
def test_fuzz_transaction_state(pop3_server, payload):
    address, _ = new_user(pop3_server, [sample_message(1), sample_message(2)])
    login = b"USER %s\r\nPASS %s\r\n" % (address.encode(), PASSWORD.encode())
    out = converse(pop3_server.port("pop3"), login, payload)
    assert out.split(b"\r\n")[:3] == [out.split(b"\r\n")[0], b"+OK", b"+OK Logged in."]
    assert out.endswith(b"\r\n")
    check_alive(pop3_server.port("pop3"))
