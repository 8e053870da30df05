"""Messages sent from their files (sendfile) must equal the reference byte-stuffing.

On a plaintext connection the server sends a message whose dot-lines the store recorded
straight from its file, in pieces with a "." before each dot-line (pop3.server,
session.Maildrop.open_verbatim); the others are read and stuffed.
These tests compare what arrives on the socket with a line-by-line reference stuffing of the
stored message, for arbitrary message bytes (hypothesis), for facts that are missing or stale,
over TLS (no sendfile), and with a client that reads slowly or not at all.
"""

from __future__ import annotations

import os
import poplib
import re
import socket
import sqlite3
import ssl
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pop3_helpers import PASSWORD, deliver, new_user, sample_message

from mailyard.maildir import CACHE_DOT_LINES, MailStore
from mailyard.maildir.files import dot_lines, to_crlf
from mailyard.maildir.index import INDEX_FILE
from mailyard.pop3 import session, wire

_STATUS = re.compile(rb"\+OK (\d+) octets\r\n")


def reference_wire(raw: bytes) -> bytes:
    """RFC 1939 §3 by lines: CRLF endings, a final one supplied, "." doubled at line start."""
    crlf = to_crlf(raw)
    if not crlf:
        return b""
    lines = crlf.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines)


def recv_until_closed(sock, deadline: float = 60.0) -> bytes:
    sock.settimeout(deadline)
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def retr_wire(port: int, address: str, numbers, wrap=None) -> bytes:
    """The raw octets answering RETR of `numbers` (pipelined), after login and before QUIT."""
    with socket.create_connection(("127.0.0.1", port)) as plain:
        sock = wrap(plain) if wrap else plain
        commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
        commands += [b"RETR %d" % n for n in numbers] + [b"QUIT"]
        sock.sendall(b"".join(c + b"\r\n" for c in commands))
        wire = recv_until_closed(sock)
    lines = wire.split(b"\r\n", 3)
    assert lines[0].startswith(b"+OK") and lines[1] == b"+OK" and lines[2].startswith(b"+OK")
    body = lines[3]
    assert body.endswith(b"+OK mailyard POP3 signing off. (0 messages deleted)\r\n")
    return body[:body.rindex(b"+OK mailyard POP3 signing off.")]


def expected_answers(messages) -> bytes:
    return b"".join(b"+OK %d octets\r\n" % len(to_crlf(m)) + reference_wire(m) + b".\r\n"
                    for m in messages)


_pieces = st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x", b".x\r\n", b"\r\n.\r\n",
                           b"\r\n..\r\n", b"Subject: s\r\n\r\n"])
_messages = st.binary(max_size=400) | st.lists(_pieces, max_size=40).map(b"".join)


@pytest.fixture(scope="module")
def mailbox(pop3_server):
    address, _ = new_user(pop3_server, [])
    return address, [0]  # the address, and how many messages it holds


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_messages, min_size=1, max_size=4))
def test_wire_bytes_equal_the_reference_stuffing(pop3_server, mailbox, messages):
    address, held = mailbox
    deliver(pop3_server, address, messages)
    first = held[0] + 1
    held[0] += len(messages)
    numbers = range(first, first + len(messages))
    assert retr_wire(pop3_server.port("pop3"), address, numbers) == expected_answers(messages)


def test_tls_sessions_send_the_same_octets(pop3_server, tls_certs):
    messages = [sample_message(1), b"Subject: d\r\n\r\n.dot\r\n", b"no end", b"", b"LF\n.\n"]
    address, _ = new_user(pop3_server, messages)
    numbers = range(1, len(messages) + 1)
    context = tls_certs.client_context()

    def wrap(sock):
        return context.wrap_socket(sock, server_hostname="localhost")

    tls = retr_wire(pop3_server.port("pop3s"), address, numbers, wrap)
    plain = retr_wire(pop3_server.port("pop3"), address, numbers)
    assert tls == plain == expected_answers(messages)


def test_missing_or_stale_dot_line_facts_fall_back_to_the_scan(pop3_server):
    clean = [sample_message(n) for n in range(4)]
    address, uids = new_user(pop3_server, clean)
    maildir = pop3_server.maildir(address)
    # Message 1: the fact is gone (an index rebuilt, a file another tool delivered);
    # message 2: another tool rewrote the file (LF endings, so another size, and a dot-line).
    with sqlite3.connect(maildir / INDEX_FILE) as db:
        db.execute("DELETE FROM cache WHERE uid = ? AND key = ?", (uids[0], CACHE_DOT_LINES))
    path = MailStore(maildir).open("INBOX").path(uids[1])
    lf = clean[1].replace(b"\r\n", b"\n").replace(b"line 0", b".line 0")
    path.write_bytes(lf)
    expected = [clean[0], lf, clean[2], clean[3]]
    assert retr_wire(pop3_server.port("pop3"), address, range(1, 5)) == b"".join(
        # The listed size is the indexed one; the octets follow the file as it is now.
        b"+OK %d octets\r\n" % len(to_crlf(clean[i])) + reference_wire(m) + b".\r\n"
        for i, m in enumerate(expected))


def test_open_verbatim_only_for_recorded_files_of_the_listed_size(tmp_path):
    store = MailStore(tmp_path / "Maildir")
    for m in (sample_message(1), b"Subject: d\r\n\r\n.dot\r\n", b"no end", sample_message(4)):
        store.deliver(m)
    drop = session.Maildrop(store.open("INBOX"))
    drop.load()
    try:
        assert [m.dot_lines for m in drop.messages] == [(), (14,), None, ()]
        for number in (1, 2):
            fd = drop.open_verbatim(number)
            assert fd is not None
            os.close(fd)
        assert drop.open_verbatim(3) is None  # nothing recorded: read and scanned
        path = os.path.join(drop._dir, drop.messages[3].filename)
        with open(path, "ab") as fh:
            fh.write(b"appended by someone\r\n")
        assert drop.open_verbatim(4) is None
        os.unlink(path)
        assert drop.open_verbatim(4) is None
    finally:
        drop.close()


def _large(n: int, size: int, dots: bool) -> bytes:
    """About `size` octets; with `dots`, every 97th line starts with "." (~100 dot-lines)."""
    line = b"plain line %d\r\n" % n
    lines = [line] * (size // len(line))
    if dots:
        lines[::97] = [b"." + line] * len(lines[::97])
    return b"Subject: big %d\r\n\r\n" % n + b"".join(lines)


@given(_messages)
def test_stuffing_at_recorded_offsets_equals_the_scan(raw):
    crlf = to_crlf(raw)
    lines = dot_lines(crlf)
    if lines is not None:
        offsets = tuple(int(o) for o in lines.split())
        assert wire.stuff_at(crlf, offsets) == wire.byte_stuff(crlf) == reference_wire(raw)


def test_slow_reader_gets_every_octet_in_order(pop3_server):
    """Pipelined RETRs far beyond the socket buffers, read late and slowly: the sendfile path
    stops when the socket is full and the rest goes through the transport, in order."""
    messages = [_large(n, 180_000 + n * 1000, dots=n % 3 == 2) for n in range(12)]
    address, _ = new_user(pop3_server, messages)
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
        commands += [b"RETR %d" % n for n in range(1, 13)] * 2 + [b"QUIT"]
        sock.sendall(b"".join(c + b"\r\n" for c in commands))
        time.sleep(1.0)
        chunks = []
        while data := sock.recv(1500):
            chunks.append(data)
    wire = b"".join(chunks)
    head, _, rest = wire.partition(b"Logged in.\r\n")
    assert rest == expected_answers(messages) * 2 + (
        b"+OK mailyard POP3 signing off. (0 messages deleted)\r\n")


def test_client_that_stops_reading_is_cut_off_after_the_idle_timeout(tls_certs,
                                                                   tmp_path_factory):
    """RFC 1939 §3 autologout also when the server waits for the client to read."""
    from pop3_helpers import start_server

    srv = start_server(tmp_path_factory.mktemp("pop3idle"), tls_certs, "idle_timeout = 2.0\n")
    try:
        address, _ = new_user(srv, [_large(n, 250_000, dots=False) for n in range(4)])
        with socket.create_connection(("127.0.0.1", srv.port("pop3"))) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
            commands += [b"RETR %d" % (1 + n % 4) for n in range(80)]  # ~20 MB asked for
            sock.sendall(b"".join(c + b"\r\n" for c in commands))
            # idle_timeout 2 s: by now the server has ended the session (without UPDATE)
            # and given the maildrop back, though this client never read a thing (the
            # kernel may still be holding octets for it).
            deadline = time.monotonic() + 30
            while True:
                time.sleep(1.0)
                client = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
                client.user(address)
                try:
                    client.pass_(PASSWORD)
                    break
                except poplib.error_proto as exc:
                    assert b"IN-USE" in exc.args[0]
                    assert time.monotonic() < deadline, "the stuck session kept its lock"
                    client.quit()
            assert client.stat()[0] == 4
            client.quit()
    finally:
        try:
            srv.stop()
        except AssertionError:
            srv.kill()


def test_stls_after_plaintext_commands_still_works_with_pipelined_retr(pop3_server,
                                                                      tls_certs):
    messages = [sample_message(n) for n in range(3)]
    address, _ = new_user(pop3_server, messages)
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as plain:
        plain.settimeout(30)
        assert plain.recv(1024).startswith(b"+OK")
        plain.sendall(b"CAPA\r\nSTLS\r\n")
        got = b""
        while not got.endswith(b"Begin TLS negotiation now.\r\n"):
            got += plain.recv(1024)
        sock = tls_certs.client_context().wrap_socket(plain, server_hostname="localhost")
        commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
        commands += [b"RETR %d" % n for n in (1, 2, 3)] + [b"QUIT"]
        sock.sendall(b"".join(c + b"\r\n" for c in commands))
        try:
            wire = recv_until_closed(sock)
        except ssl.SSLError:
            pytest.fail("TLS session broken")
    assert expected_answers(messages) in wire


def test_client_that_pipelines_everything_then_shuts_its_side_gets_every_answer(pop3_server):
    messages = [sample_message(n, body_lines=3000) for n in range(3)]
    address, _ = new_user(pop3_server, messages)
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as sock:
        commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
        commands += [b"RETR %d" % n for n in (1, 2, 3)] + [b"QUIT"]
        sock.sendall(b"".join(c + b"\r\n" for c in commands))
        sock.shutdown(socket.SHUT_WR)
        wire = recv_until_closed(sock)
    assert expected_answers(messages) in wire
    assert wire.endswith(b"+OK mailyard POP3 signing off. (0 messages deleted)\r\n")
