"""Hostile and careless clients against a strictly configured real server."""

from __future__ import annotations

import poplib
import socket

import pytest
from pop3_helpers import PASSWORD, new_user, sample_message, start_server

from mailyard.pop3 import proto

STRICT = """plaintext_auth = "never"
idle_timeout = 2.0
max_line_length = 256
max_bad_commands = 3
max_auth_failures = 2
ip_failure_limit = 4
"""


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory, tls_certs):
    srv = start_server(tmp_path_factory.mktemp("pop3strict"), tls_certs, STRICT)
    yield srv
    try:
        srv.stop()
    except AssertionError:
        srv.kill()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def line(text: str, code: str | None = None, positive: bool = False) -> bytes:
    return proto.format_reply(positive, text, code)


def test_plaintext_refused_without_tls_even_on_loopback(strict_server, tls_certs):
    address, _ = new_user(strict_server, [sample_message(1)])
    c = poplib.POP3("localhost", strict_server.port("pop3"), timeout=30)
    caps = c.capa()
    assert "USER" not in caps and "SASL" not in caps and "STLS" in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Plaintext authentication"):
        c.user(address)
    c.stls(context=tls_certs.client_context())
    assert "USER" in c.capa()
    c.user(address)
    c.pass_(PASSWORD)
    assert c.stat()[0] == 1
    c.quit()


def test_line_too_long(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port("pop3"))) as s:
        s.recv(1024)
        s.sendall(b"CAPA " + b"x" * 5000 + b"\r\nQUIT\r\n")
        wire = read_all(s)
    assert wire == line(proto.REPLY_LINE_TOO_LONG) + line(proto.REPLY_BYE, positive=True)


def test_too_many_bad_commands_disconnects(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port("pop3"))) as s:
        s.recv(1024)
        s.sendall(b"HELO\r\n" * 10)
        wire = read_all(s)
    assert wire == line(proto.REPLY_UNKNOWN) * 3 + line(proto.REPLY_TOO_MANY_ERRORS)


def test_idle_timeout_closes_without_update(strict_server, tls_certs):
    with socket.create_connection(("127.0.0.1", strict_server.port("pop3"))) as s:
        assert s.recv(1024).startswith(b"+OK")
        assert read_all(s) == line(proto.REPLY_IDLE)


def test_failed_logins_end_the_session_then_the_ip_is_refused(strict_server, tls_certs):
    address, _ = new_user(strict_server, [])

    def attempt(password: str) -> poplib.POP3:
        c = poplib.POP3_SSL("localhost", strict_server.port("pop3s"),
                            context=tls_certs.client_context(), timeout=30)
        c.user(address)
        c.pass_(password)
        return c

    # max_auth_failures = 2: the second failure in a session closes it.
    c = poplib.POP3_SSL("localhost", strict_server.port("pop3s"),
                        context=tls_certs.client_context(), timeout=30)
    for _ in range(2):
        c.user(address)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            c.pass_("wrong")
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        c.noop()
    # ip_failure_limit = 4: two more failures, and even the right password is refused.
    for _ in range(2):
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            attempt("wrong")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\] Too many failed logins"):
        attempt(PASSWORD)
