"""The FETCH fast path (ops/fetchfast.py) against the general one, over imaplib.

The fast path answers UID/FLAGS/INTERNALDATE/RFC822.SIZE/MODSEQ/ENVELOPE/BODYSTRUCTURE/BODY
and whole bodies in bulk; adding any other item (BODY.PEEK[HEADER]) sends the same command
down the general path, so the two must answer the shared items byte for byte.
"""

from __future__ import annotations

import os
import re
import time

from imap_support import message
from test_imaplib import MULTIPART

from mailyard.imap.ops.fetch import CACHE_KEY

FAST_ITEMS = "UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY"


def _fill(store):
    store.deliver(message("plain one"))
    store.deliver(MULTIPART, flags=("\\Flagged", "\\Seen"), keywords=("$Label1",))
    store.deliver(message("quoted \"name\"", sender='"Doe, J." <j@example.org>'))
    store.deliver(message("lf body", body="line one\nline two\n"))


def test_fast_path_answers_like_the_general_path(connect, store):
    _fill(store)
    c = connect()
    c.select("INBOX", readonly=True)
    _typ, fast = c.fetch("1:*", f"({FAST_ITEMS})")
    _typ, general = c.fetch("1:*", f"({FAST_ITEMS} BODY.PEEK[HEADER])")
    heads = [item[0] for item in general if isinstance(item, tuple)]
    assert len(fast) == len(heads) == 4
    for fast_line, general_head in zip(fast, heads):
        shared = re.sub(rb" BODY\[HEADER\] \{\d+\}$", b"", general_head)
        assert fast_line == shared + b")"
    assert b"FLAGS (\\Flagged \\Seen $Label1)" in fast[1]


def test_fast_path_whole_bodies_byte_exact_with_sizes(connect, store):
    bodies = [message(f"m{i}", body=f"body {i}\r\n" * (i + 1)) for i in range(5)]
    for body in bodies:
        store.deliver(body)
    c = connect()
    c.select("INBOX", readonly=True)
    _typ, data = c.fetch("1:*", "(UID RFC822.SIZE BODY.PEEK[])")
    got = [item for item in data if isinstance(item, tuple)]
    assert [item[1] for item in got] == bodies
    for (head, body), uid in zip(got, range(1, 6)):
        assert head == b"%d (UID %d RFC822.SIZE %d BODY[] {%d}" % (uid, uid, len(body),
                                                                   len(body))


def test_regression_lf_file_from_another_tool_served_as_crlf(connect, store, imap_server,
                                                              user):
    """read() skips the CRLF pass only for files already as long as RFC822.SIZE: a file a
    foreign tool wrote with bare LF (Dovecot keeps what it was given) still goes out CRLF,
    with RFC822.SIZE equal to the literal's size."""
    store.deliver(message("ours"))
    maildir = imap_server.maildir(user)
    lf = b"From: x@example.org\nSubject: lf only\n\nfirst\nsecond\n"
    name = f"{int(time.time())}.M1P1Q1.foreign"
    (maildir / "tmp" / name).write_bytes(lf)
    os.rename(maildir / "tmp" / name, maildir / "new" / name)
    c = connect()
    c.select("INBOX", readonly=True)
    _typ, data = c.fetch("2", "(RFC822.SIZE BODY.PEEK[])")
    head, body = data[0]
    crlf = lf.replace(b"\n", b"\r\n")
    assert body == crlf
    assert b"RFC822.SIZE %d " % len(crlf) in head
    _typ, data = c.fetch("2", "(ENVELOPE)")
    assert b'"lf only"' in data[0]


def test_regression_cold_structures_computed_once_and_cached(connect, store):
    """Messages stored without the delivery-time builder (a mailbox copied in) get their
    ENVELOPE/BODYSTRUCTURE computed by the first FETCH and cached for the next ones."""
    from mailyard.maildir.store import _CACHE_BUILDERS

    builders = list(_CACHE_BUILDERS)
    _CACHE_BUILDERS.clear()   # deliver as a foreign tool would: no cache entries
    try:
        uids = [store.deliver(message(f"cold {i}")) for i in range(3)]
    finally:
        _CACHE_BUILDERS.extend(builders)
    folder = store.open("INBOX")
    assert all(folder.cache_get(uid, CACHE_KEY) is None for uid in uids)
    c = connect()
    c.select("INBOX", readonly=True)
    _typ, first = c.fetch("1:*", "(ENVELOPE BODYSTRUCTURE)")
    assert all(folder.cache_get(uid, CACHE_KEY) is not None for uid in uids)
    _typ, again = c.fetch("1:*", "(ENVELOPE BODYSTRUCTURE)")
    assert first == again
    assert b'"cold 2"' in first[2]


def test_expunged_message_is_a_ghost_in_the_fast_path(connect, store):
    """RFC 3501 §7.4.1: no EXPUNGE during FETCH; the gone message is simply not answered."""
    for i in range(3):
        store.deliver(message(f"g{i}"))
    watcher, other = connect(), connect()
    watcher.select("INBOX")
    other.select("INBOX")
    other.store("2", "+FLAGS", "(\\Deleted)")
    other.expunge()
    _typ, data = watcher.fetch("1:3", "(UID FLAGS)")
    assert [d for d in data if d] == [b"1 (UID 1 FLAGS ())", b"3 (UID 3 FLAGS ())"]
