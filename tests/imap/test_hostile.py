"""Hostile and broken clients: huge literals, overlong lines, error floods, plaintext logins,
STARTTLS command injection, idle timeouts, login throttling."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
from imap_support import PASSWORD

from mailyard.imap.server import LoginThrottle


def open_raw(imap_server):
    s = socket.create_connection(("127.0.0.1", imap_server.port("imap")), timeout=30)
    f = s.makefile("rwb")
    assert f.readline().startswith(b"* OK [CAPABILITY")
    return s, f


def send(f, data: bytes) -> None:
    f.write(data)
    f.flush()


def test_2gb_literal_refused_before_any_continuation(imap_server, user):
    s, f = open_raw(imap_server)
    with s:
        send(f, f"a LOGIN {user} {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"a OK")
        send(f, b"b APPEND INBOX {2147483648}\r\n")
        assert f.readline() == b"b NO [TOOBIG] literal too big\r\n"
        send(f, b"c NOOP\r\n")
        assert f.readline() == b"c OK NOOP completed\r\n"


def test_huge_non_synchronizing_literal_closes(imap_server):
    s, f = open_raw(imap_server)
    with s:
        send(f, b"a LOGIN {4000000000+}\r\n")
        assert f.readline().startswith(b"* BYE [TOOBIG]")
        assert f.readline() == b""


def test_overlong_command_line_closes(imap_server):
    s, f = open_raw(imap_server)
    with s:
        try:
            send(f, b"a NOOP " + b"x" * 200000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert f.readline().startswith(b"* BYE command line too long")


def test_error_flood_gets_bye(imap_server):
    s, f = open_raw(imap_server)
    with s:
        send(f, b"x GARBAGE\r\n" * 30)
        lines = []
        while True:
            line = f.readline()
            if not line:
                break
            lines.append(line)
        assert lines[-1] == b"* BYE too many errors\r\n"
        assert sum(1 for line in lines if b" BAD " in line) == 20


def test_binary_garbage_only_gets_bad(imap_server, user):
    s, f = open_raw(imap_server)
    with s:
        send(f, b"\x00\xff\x80 \x1b[2J (((( {5}\r\n")
        assert f.readline() == b"+ go ahead\r\n"
        send(f, b"12345\r\n")
        assert b" BAD " in f.readline()
        send(f, f"a LOGIN {user} {PASSWORD}\r\n".encode())
        assert f.readline().startswith(b"a OK")


def test_starttls_injection_is_discarded(imap_server):
    """Commands pipelined after STARTTLS in plaintext must never run (CVE-2011-0411 style)."""
    s, f = open_raw(imap_server)
    send(f, b"a STARTTLS\r\nb CAPABILITY\r\n")
    assert f.readline() == b"a OK begin TLS negotiation now\r\n"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(s, server_hostname="localhost")
    with tls:
        tf = tls.makefile("rwb")
        send(tf, b"c NOOP\r\n")
        assert tf.readline() == b"c OK NOOP completed\r\n"


@pytest.fixture
def strict_server(mailyard_server):
    srv = mailyard_server(services={"imap"}, toml="[imap]\nplaintext_auth_networks = []\n"
                                                  "idle_timeout = 2.0\n")
    srv.add_user("dave@example.test", PASSWORD)
    return srv


def test_logindisabled_on_plaintext_then_login_after_starttls(strict_server):
    import imaplib

    c = imaplib.IMAP4("127.0.0.1", strict_server.port("imap"))
    assert "LOGINDISABLED" in c.capabilities
    assert "AUTH=PLAIN" not in c.capabilities
    typ, data = c._simple_command("LOGIN", "dave@example.test", PASSWORD)
    assert typ == "NO" and b"PRIVACYREQUIRED" in data[0]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.starttls(ssl_context=ctx)
    assert "LOGINDISABLED" not in c.capabilities
    assert c.login("dave@example.test", PASSWORD)[0] == "OK"
    c.logout()


def test_idle_timeout_says_bye(strict_server):
    s = socket.create_connection(("127.0.0.1", strict_server.port("imap")), timeout=30)
    with s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        assert f.readline() == b"* BYE autologout; idle for too long\r\n"
        assert f.readline() == b""


async def test_login_throttle_grows_per_ip():
    throttle = LoginThrottle(free=2, max_delay=0.0)
    for _ in range(5):
        await throttle.failed("192.0.2.7")
    assert throttle.failures["192.0.2.7"][0] == 5
    slow = LoginThrottle(free=2, max_delay=8.0)
    slow.failures["192.0.2.7"] = (6, time.monotonic())
    assert slow.delay_for("192.0.2.7") == 8.0
    assert slow.delay_for("198.51.100.1") == 0.0


def test_auth_cache_remembers_only_the_exact_credentials():
    from mailyard.imap.server import AuthCache

    cache = AuthCache(ttl=300.0)
    cache.put("alice@example.test", "right", "alice@example.test")
    assert cache.get("alice@example.test", "right") == "alice@example.test"
    assert cache.get("alice@example.test", "wrong") is None
    assert cache.get("alice@example.test\0", "right") is None
    assert AuthCache(ttl=0).get("alice@example.test", "right") is None
    assert all(b"right" not in k for k in cache._entries)


def test_big_literal_before_login_is_refused(imap_server):
    """Before authentication only small literals (credentials) are accepted, so an anonymous
    client cannot make the server buffer a message-sized literal."""
    s, f = open_raw(imap_server)
    with s:
        send(f, b"a APPEND INBOX {100000}\r\n")
        assert f.readline() == b"a NO [TOOBIG] literal too big\r\n"
        send(f, b"b LOGIN {5}\r\n")
        assert f.readline() == b"+ go ahead\r\n"
