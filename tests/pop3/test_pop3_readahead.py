"""Read-ahead (pop3.readahead): RETR answered from a prefetched copy must equal a fresh read.

The server reads message n+1 ahead after answering RETR n. These tests change the maildrop
between the two (expunge and flag change from another session, DELE, RSET, TOP) and check that
what the client gets is exactly what it would have got without the read-ahead; plus the store
itself, without sockets, for the bounds and the file checks.
"""

from __future__ import annotations

import os
import poplib
import socket

import pytest
from pop3_helpers import PASSWORD, deliver, login, new_user, sample_message

from mailyard.pop3 import proto, session
from mailyard.pop3.readahead import Prefetched, ReadAhead


def retr_bytes(client: poplib.POP3, number: int) -> bytes:
    _, lines, _ = client.retr(number)
    return b"".join(line + b"\r\n" for line in lines)


def store_folder(srv, address):
    from mailyard.maildir import MailStore

    folder = MailStore(srv.maildir(address)).open("INBOX")
    folder.refresh()
    return folder


def dotty_message(n: int, size: int) -> bytes:
    """A message of about `size` octets whose lines start with dots at awkward offsets."""
    head = b"From: a@example.net\r\nSubject: dots %d\r\n\r\n" % n
    lines, total = [], len(head)
    i = 0
    while total < size:
        if i % 3 == 0:
            line = b"." * (1 + i % 4) + b"x" * (i % 97)
        else:
            line = b"y" * ((i * 37) % 120) + b"." * (i % 2)
        lines.append(line + b"\r\n")
        total += len(lines[-1])
        i += 1
    return head + b"".join(lines) + b".\r\n"


def wire_of(raw: bytes) -> bytes:
    return proto.byte_stuff(proto.to_crlf(raw))


# -- over the socket ----------------------------------------------------------------------
def test_retr_after_the_next_message_was_expunged_elsewhere(pop3_server):
    address, uids = new_user(pop3_server, [sample_message(n) for n in range(3)])
    c = login(pop3_server, address)
    assert b"message 0" in retr_bytes(c, 1)  # message 2 is read ahead now
    store_folder(pop3_server, address).expunge([uids[1]])
    with pytest.raises(poplib.error_proto, match="removed by another session"):
        c.retr(2)
    assert retr_bytes(c, 3) == proto.to_crlf(sample_message(2))
    assert c.quit().startswith(b"+OK")


def test_retr_after_the_next_message_was_renamed_by_a_flag_change(pop3_server):
    address, uids = new_user(pop3_server, [sample_message(n) for n in range(2)])
    c = login(pop3_server, address)
    retr_bytes(c, 1)
    store_folder(pop3_server, address).store_flags([uids[1]], ["\\Seen"], mode="add")
    assert retr_bytes(c, 2) == proto.to_crlf(sample_message(1))
    c.quit()


def test_dele_then_retr_of_a_prefetched_message(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(n) for n in range(3)])
    c = login(pop3_server, address)
    retr_bytes(c, 1)
    c.dele(2)
    with pytest.raises(poplib.error_proto, match="deleted"):
        c.retr(2)
    c.rset()
    assert retr_bytes(c, 2) == proto.to_crlf(sample_message(1))
    assert retr_bytes(c, 3) == proto.to_crlf(sample_message(2))
    c.dele(3)
    assert c.quit().startswith(b"+OK")
    assert len(store_folder(pop3_server, address).messages()) == 2


def test_top_after_a_prefetch(pop3_server):
    messages = [sample_message(n, body_lines=6) for n in range(3)]
    address, _ = new_user(pop3_server, messages)
    c = login(pop3_server, address)
    retr_bytes(c, 1)
    _, top, _ = c.top(2, 2)
    assert top == proto.to_crlf(messages[1]).split(b"\r\n")[:7]
    assert retr_bytes(c, 2) == proto.to_crlf(messages[1])
    c.quit()


def test_lf_file_read_ahead_comes_out_crlf(pop3_server):
    messages = [sample_message(0), b"Subject: lf\n\n.dot\nplain\n", sample_message(2)]
    address, _ = new_user(pop3_server, messages)
    c = login(pop3_server, address)
    for i, raw in enumerate(messages, 1):
        assert retr_bytes(c, i) == proto.to_crlf(raw)
    c.quit()


def test_dot_stuffing_byte_exact_at_chunk_boundaries(pop3_server):
    """Sizes around the read and socket chunk sizes; compared on the wire, not via poplib."""
    sizes = [4095, 4096, 4097, 8191, 8193, 65535, 65537, 200_000]
    messages = [dotty_message(n, s) for n, s in enumerate(sizes)]
    address, _ = new_user(pop3_server, messages)
    commands = [b"USER " + address.encode(), b"PASS " + PASSWORD.encode()]
    commands += [b"RETR %d" % i for i in range(1, len(messages) + 1)] + [b"QUIT"]
    with socket.create_connection(("127.0.0.1", pop3_server.port("pop3"))) as s:
        s.sendall(b"".join(c + b"\r\n" for c in commands))
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    wire = b"".join(chunks)
    pos = 0
    for raw in messages:
        status = b"+OK %d octets\r\n" % len(proto.to_crlf(raw))
        pos = wire.index(status, pos) + len(status)
        expected = wire_of(raw) + b".\r\n"
        assert wire[pos:pos + len(expected)] == expected
        pos += len(expected)
    assert wire[pos:].startswith(b"+OK")


# -- the maildrop and the store, no sockets ----------------------------------------------
@pytest.fixture
def drop(tmp_path):
    from mailyard.maildir import MailStore

    store = MailStore(tmp_path / "Maildir")
    messages = [dotty_message(n, 3000 + n * 100) for n in range(4)]
    for m in messages:
        store.deliver(m)
    d = session.Maildrop(store.open("INBOX"))
    d.load()
    return d, messages


def test_prefetch_then_take_equals_a_fresh_read(drop):
    d, messages = drop
    d.prefetch(2)
    assert 2 in d.ahead
    assert d.take_ahead(2) == wire_of(messages[1])
    assert d.take_ahead(2) is None  # taken once


def test_prefetch_skips_missing_deleted_and_large(drop):
    d, _ = drop
    d.prefetch(0)
    d.prefetch(99)
    d.delete(3)
    d.prefetch(3)
    assert len(d.ahead) == 0
    d.ahead.max_message = 10
    d.prefetch(1)
    assert len(d.ahead) == 0


def test_dele_and_rset_and_commit_drop_entries(drop):
    d, _ = drop
    d.prefetch(1)
    d.prefetch(2)
    d.delete(2)
    assert 2 not in d.ahead and 1 in d.ahead
    d.reset()
    assert len(d.ahead) == 0 and d.ahead.held_bytes == 0
    d.prefetch(1)
    d.commit()
    assert len(d.ahead) == 0


def test_take_refuses_a_vanished_or_replaced_file(drop):
    d, messages = drop
    d.prefetch(1)
    d.prefetch(2)
    path1 = os.path.join(d._dir, d.messages[0].filename)
    os.unlink(path1)
    assert d.take_ahead(1) is None
    path2 = os.path.join(d._dir, d.messages[1].filename)
    replacement = path2 + ".new"
    with open(replacement, "wb") as fh:
        fh.write(messages[1])
    os.replace(replacement, path2)  # same name and size, another inode
    assert d.take_ahead(2) is None


def test_read_ahead_memory_is_bounded():
    ra = ReadAhead(max_bytes=100, max_message=100)
    for n in range(1, 6):
        ra.put(n, Prefetched("/nonexistent", 0, 0, b"x" * 40))
    assert len(ra) == 2 and ra.held_bytes == 80
    assert 4 in ra and 5 in ra
    ra.put(6, Prefetched("/nonexistent", 0, 0, b"x" * 101))  # larger than the bound
    assert 6 not in ra and ra.held_bytes == 80
    assert ra.take(5) is None  # its file does not exist
    assert ra.held_bytes == 40


def test_mail_delivered_after_login_is_not_read_ahead(pop3_server):
    address, _ = new_user(pop3_server, [sample_message(0)])
    c = login(pop3_server, address)
    deliver(pop3_server, address, [sample_message(1)])
    retr_bytes(c, 1)
    with pytest.raises(poplib.error_proto, match="No such message"):
        c.retr(2)
    c.quit()
