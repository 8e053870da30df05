"""The shared folder hub: sessions on one folder share one snapshot and hear each other."""

from __future__ import annotations

from mailyard.imap.ops import hub as hub_mod
from mailyard.imap.ops.hub import acquire, release
from mailyard.imap.ops.selected import SelectedMailbox
from mailyard.maildir import MailStore


def msg(n: int) -> bytes:
    return b"Subject: m%d\r\n\r\nbody\r\n" % n


def test_two_views_share_one_snapshot_and_see_each_other(tmp_path):
    store = MailStore(tmp_path / "Maildir")
    for n in range(3):
        store.deliver(msg(n))
    a = SelectedMailbox("INBOX", acquire(store, "INBOX"), False)
    b = SelectedMailbox("INBOX", acquire(MailStore(tmp_path / "Maildir"), "INBOX"), False)
    assert a.hub is b.hub and a.uids is b.uids      # one snapshot, one numbering tuple
    a.folder.store_flags([2], ["\\Flagged"], "add")
    assert a.poll() == []                            # its own change is not echoed
    assert b.poll() == [b"* 2 FETCH (FLAGS (\\Flagged))\r\n"]
    for uid in a.folder.expunge([1]):
        a.forget(uid)
    assert b.poll(allow_expunge=False) == []         # FETCH/STORE/SEARCH: held back
    assert b.exists == 3
    assert b.poll() == [b"* 1 EXPUNGE\r\n"]
    store.deliver(msg(9))
    assert a.poll() == [b"* 1 EXPUNGE\r\n", b"* 3 EXISTS\r\n"]
    a.close()
    b.close()
    assert not hub_mod._registry


def test_view_resyncs_when_it_fell_off_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_mod, "LOG_LIMIT", 2)
    store = MailStore(tmp_path / "Maildir")
    for n in range(5):
        store.deliver(msg(n))
    a = SelectedMailbox("INBOX", acquire(store, "INBOX"), False)
    b = SelectedMailbox("INBOX", acquire(store, "INBOX"), False)
    for uid in (1, 2, 3):
        a.folder.store_flags([uid], ["\\Seen"], "add")   # three log entries: b falls off
    a.folder.expunge([5])
    lines = b.poll()
    assert lines[0] == b"* 5 EXPUNGE\r\n"
    assert sum(1 for line in lines if b"FETCH" in line) == 4
    release(a.hub)
    release(b.hub)


def test_precomputed_structure_is_what_fetch_serves(tmp_path):
    from mailyard.imap.ops.fetch import build_batch, precompute
    from mailyard.imap.proto.types import FetchAttribute

    store = MailStore(tmp_path / "Maildir")
    data = b"Subject: pre\r\nFrom: a@b.c\r\n\r\nhello\r\n"
    uid = store.deliver(data)
    folder = store.open("INBOX")
    folder.cache_put(uid, *precompute(data))
    sel = SelectedMailbox("INBOX", acquire(store, "INBOX"), True)
    lines, _ = build_batch(sel, sel.uids, (FetchAttribute("ENVELOPE"),
                                           FetchAttribute("BODYSTRUCTURE")), False)
    assert lines == [b'* 1 FETCH (ENVELOPE (NIL "pre" ((NIL NIL "a" "b.c")) ((NIL NIL "a" '
                     b'"b.c")) ((NIL NIL "a" "b.c")) NIL NIL NIL NIL NIL) BODYSTRUCTURE ("text" '
                     b'"plain" ("charset" "us-ascii") NIL NIL "7bit" 7 1 NIL NIL NIL NIL))\r\n']
    sel.close()
