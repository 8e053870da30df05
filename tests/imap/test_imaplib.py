"""Every IMAP4rev1 command through Python's imaplib against the real server on loopback."""

from __future__ import annotations

import base64
import imaplib
import socket
import time

import pytest
from imap_support import PASSWORD, message

MULTIPART = (b"From: Ann <ann@example.org>\r\nTo: x@example.test\r\nSubject: parts\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
             b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n"
             + base64.b64encode("Grüße aus Köln, the needle\r\n".encode()) + b"\r\n"
             b"--B\r\nContent-Type: application/octet-stream; name=x.bin\r\n\r\nBINARY\r\n"
             b"--B--\r\n")


def refused(response, code: str) -> bool:
    """imaplib returns NO responses (it raises only on BAD): check status and code."""
    typ, data = response
    return typ == "NO" and f"[{code}".encode() in data[0]


def test_capability_and_logindisabled_absent_on_loopback(connect):
    c = connect(login=False)
    typ, data = c.capability()
    caps = data[0].split()
    assert typ == "OK"
    for cap in (b"IMAP4rev1", b"IDLE", b"UIDPLUS", b"MOVE", b"STARTTLS", b"AUTH=PLAIN",
                b"CONDSTORE", b"QRESYNC", b"SORT", b"ESEARCH", b"LITERAL+"):
        assert cap in caps
    assert b"LOGINDISABLED" not in caps


def test_login_wrong_password_is_no(imap_server, user):
    c = imaplib.IMAP4("127.0.0.1", imap_server.port("imap"))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        c.login(user, "nope")
    c.login(user, PASSWORD)
    c.logout()


def test_authenticate_plain(imap_server, user):
    c = imaplib.IMAP4("127.0.0.1", imap_server.port("imap"))
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{user}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert c.state == "AUTH"
    c.logout()


def test_imaps_implicit_tls(imap_server, user):
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4_SSL("127.0.0.1", imap_server.port("imaps"), ssl_context=ctx)
    c.login(user, PASSWORD)
    assert b"STARTTLS" not in c.capability()[1][0]
    c.logout()


def test_starttls(imap_server, user):
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c = imaplib.IMAP4("127.0.0.1", imap_server.port("imap"))
    assert c.starttls(ssl_context=ctx)[0] == "OK"
    c.login(user, PASSWORD)
    assert c.noop()[0] == "OK"
    c.logout()


def test_select_examine_fetch_items(connect, store):
    store.deliver(message("first"))
    store.deliver(MULTIPART, flags=("\\Flagged",))
    c = connect()
    typ, data = c.select("INBOX", readonly=True)
    assert (typ, data) == ("OK", [b"2"])
    typ, data = c.fetch("2", "(UID FLAGS RFC822.SIZE BODYSTRUCTURE ENVELOPE)")
    text = data[0]
    assert b"FLAGS (\\Flagged)" in text
    assert b'"mixed" ("boundary" "B")' in text
    assert b'(("Ann" NIL "ann" "example.org"))' in text
    typ, data = c.fetch("2", "(BODY[1] BODY[1.MIME] BODY[2] BODY[HEADER] BODY[TEXT]<0.10>)")
    parts = [p for p in data[0] if isinstance(p, bytes)] if isinstance(data[0], tuple) else []
    assert data[0][1].startswith(b"R3L") or data[0][1] == base64.b64encode(
        "Grüße aus Köln, the needle\r\n".encode())
    typ, data = c.fetch("1", "(RFC822.HEADER RFC822.TEXT)")
    assert data[0][1].startswith(b"From: Bob")
    assert data[1][1] == b"Hello world\r\n"
    # EXAMINE is read-only: a non-peek fetch does not set \Seen
    c.fetch("1", "(BODY[])")
    assert b"\\Seen" not in c.fetch("1", "(FLAGS)")[1][0]
    del parts


def test_fetch_sets_seen_unless_peek(connect, store):
    store.deliver(message("a"))
    c = connect()
    c.select("INBOX")
    c.fetch("1", "(BODY.PEEK[])")
    assert c.fetch("1", "(FLAGS)")[1][0] == b"1 (FLAGS ())"
    typ, data = c.fetch("1", "(RFC822)")
    assert data[0][1] == message("a")
    assert b"\\Seen" in c.fetch("1", "(FLAGS)")[1][0]


def test_fetch_partial_and_header_fields(connect, store):
    store.deliver(message("partial", body="0123456789\r\n"))
    c = connect()
    c.select("INBOX")
    typ, data = c.fetch("1", "(BODY.PEEK[TEXT]<2.5>)")
    assert data[0][0].endswith(b"BODY[TEXT]<2> {5}")
    assert data[0][1] == b"23456"
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])")
    assert data[0][1] == b"Subject: partial\r\nDate: Wed, 7 Feb 2024 10:00:00 +0100\r\n\r\n"
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT DATE TO FROM)])")
    assert data[0][1] == b"Message-ID: <partial@example.org>\r\n\r\n"


def test_uid_fetch_and_bad_sequence(connect, store):
    for i in range(3):
        store.deliver(message(f"m{i}"))
    c = connect()
    c.select("INBOX")
    typ, data = c.uid("FETCH", "2:*", "(FLAGS)")
    assert [d.split()[2] for d in data] == [b"2", b"3"]
    with pytest.raises(imaplib.IMAP4.error, match="invalid message number"):
        c.fetch("9", "(FLAGS)")
    assert c.uid("FETCH", "99", "(FLAGS)") == ("OK", [None])


def test_store_flags_variants(connect, store):
    store.deliver(message("s"))
    c = connect()
    c.select("INBOX")
    assert c.store("1", "+FLAGS", "(\\Flagged $Work)")[1] == [b"1 (FLAGS (\\Flagged $Work))"]
    assert c.store("1", "-FLAGS", "($Work)")[1] == [b"1 (FLAGS (\\Flagged))"]
    assert c.store("1", "FLAGS", "(\\Seen)")[1] == [b"1 (FLAGS (\\Seen))"]
    assert c.store("1", "+FLAGS.SILENT", "(\\Answered)")[1] == [None]
    assert c.fetch("1", "(FLAGS)")[1][0] == b"1 (FLAGS (\\Answered \\Seen))"
    assert c.uid("STORE", "1", "-FLAGS", "(\\Seen)")[0] == "OK"
    with pytest.raises(imaplib.IMAP4.error):
        c.store("1", "+FLAGS", "(\\Bogus)")


def test_search_full_grammar(connect, store):
    store.deliver(message("alpha", sender="Ann <ann@example.org>",
                          date="Mon, 1 Jan 2024 10:00:00 +0000"), flags=("\\Seen",))
    store.deliver(message("beta report", body="the quick brown fox\r\n" * 50,
                          date="Thu, 1 Feb 2024 10:00:00 +0000"))
    store.deliver(MULTIPART)
    store.deliver(message("=?utf-8?q?Gr=C3=BC=C3=9Fe?=", extra="X-Priority: 1\r\n"))
    c = connect()
    c.select("INBOX")

    def search(*criteria, charset=None):
        return c.search(charset, *criteria)[1][0].split()

    assert search("ALL") == [b"1", b"2", b"3", b"4"]
    assert search("SEEN") == [b"1"]
    assert search("UNSEEN") == [b"2", b"3", b"4"]
    assert search("FROM", "ann") == [b"1", b"3"]
    assert search("OR", "SUBJECT", "alpha", "SUBJECT", "beta") == [b"1", b"2"]
    assert search("NOT", "SUBJECT", "alpha", "2:3") == [b"2", b"3"]
    assert search("LARGER", "1000") == [b"2"]
    assert search("SMALLER", "1000") == [b"1", b"3", b"4"]
    assert search("SENTBEFORE", "15-Jan-2024") == [b"1"]
    assert search("SENTSINCE", "1-Feb-2024") == [b"2", b"3", b"4"]
    assert search("HEADER", "X-Priority", "1") == [b"4"]
    assert search("BODY", "needle") == [b"3"]        # inside base64: decoded content
    assert search("TEXT", "\"QUICK BROWN\"") == [b"2"]
    assert search("UID", "2:3") == [b"2", b"3"]
    assert search("SINCE", "1-Jan-2000") == [b"1", b"2", b"3", b"4"]
    assert search("BEFORE", "1-Jan-2000") == []
    c.literal = "Grüße".encode()
    assert search("SUBJECT", charset="UTF-8") == [b"4"]
    c.literal = "köln".encode()
    assert search("BODY", charset="UTF-8") == [b"3"]
    assert c.uid("SEARCH", "SUBJECT", "beta")[1] == [b"2"]
    typ, data = c.search("KOI8-R", "ALL")
    assert typ == "NO" and b"BADCHARSET" in data[0]
    with pytest.raises(imaplib.IMAP4.error):
        c.search(None, "FROBNICATE")


def test_copy_expunge_close(connect, store):
    for i in range(4):
        store.deliver(message(f"c{i}"))
    store.create_folder("Archive.2024")
    c = connect()
    c.select("INBOX")
    typ, data = c.copy("1:2", "Archive.2024")
    assert typ == "OK" and b"COPYUID" in data[0]
    assert refused(c.copy("1", "Nope"), "TRYCREATE")
    c.store("1,3", "+FLAGS", "(\\Deleted)")
    assert c.expunge()[1] == [b"3", b"1"]
    assert c.select("INBOX")[1] == [b"2"]
    c.store("1", "+FLAGS", "(\\Deleted)")
    assert c.close()[0] == "OK"
    assert c.status("INBOX", "(MESSAGES)")[1] == [b"INBOX (MESSAGES 1)"]
    assert c.status("Archive.2024", "(MESSAGES UIDNEXT UNSEEN)")[1] == \
        [b'"Archive.2024" (MESSAGES 2 UIDNEXT 3 UNSEEN 2)']


def test_append_with_flags_and_date(connect, store):
    c = connect()
    when = imaplib.Time2Internaldate(time.mktime((2023, 5, 17, 8, 30, 0, 0, 0, -1)))
    typ, data = c.append("INBOX", "(\\Seen $Important)", when, message("appended"))
    assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
    c.select("INBOX")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"FLAGS (\\Seen $Important)" in data[0][0]
    assert b"17-May-2023" in data[0][0]
    assert data[0][1] == message("appended")
    assert refused(c.append("Missing", None, None, message("x")), "TRYCREATE")


def test_list_lsub_create_delete_rename_subscribe(connect, store):
    c = connect()
    assert c.create("Projects")[0] == "OK"
    assert c.create("Projects.Alpha")[0] == "OK"
    assert c.create("Entwürfe".encode().decode("latin-1")
                    if False else "Entw&APw-rfe")[0] == "OK"
    assert refused(c.create("Projects"), "ALREADYEXISTS")
    names = [line for line in c.list()[1]]
    assert b'(\\HasChildren) "." "Projects"' in names
    assert b'(\\HasNoChildren) "." "Projects.Alpha"' in names
    assert b'(\\HasNoChildren) "." "Entw&APw-rfe"' in names
    assert c.list("\"\"", "%")[1].count(b'(\\HasNoChildren) "." "Projects.Alpha"') == 0
    assert c.list("Projects.", "%")[1] == [b'(\\HasNoChildren) "." "Projects.Alpha"']
    assert c.subscribe("Projects.Alpha")[0] == "OK"
    assert b'() "." "Projects.Alpha"' in c.lsub('""', "*")[1]
    assert c.lsub('""', "Projects.*")[1] == [b'() "." "Projects.Alpha"']
    # RFC 3501 §6.3.9: % stops at the unsubscribed parent, which is named \Noselect
    assert b'(\\Noselect) "." "Projects"' in c.lsub('""', "%")[1]
    typ, _ = c._simple_command("LIST", "(SUBSCRIBED RECURSIVEMATCH)", '""', "%")
    assert b'(\\HasChildren) "." "Projects" ("CHILDINFO" ("SUBSCRIBED"))' in \
        c.untagged_responses.pop("LIST")
    assert c.unsubscribe("Projects.Alpha")[0] == "OK"
    assert c.lsub('""', "Projects.*")[1] == [None]
    assert c.rename("Projects", "Work")[0] == "OK"
    assert b'(\\HasNoChildren) "." "Work.Alpha"' in c.list()[1]
    assert refused(c.delete("INBOX"), "CANNOT")
    assert c.delete("Work.Alpha")[0] == "OK"
    assert refused(c.delete("Work.Alpha"), "NONEXISTENT")
    assert refused(c.create("bad/name"), "CANNOT")


def test_rename_inbox_moves_messages(connect, store):
    store.deliver(message("old inbox"))
    c = connect()
    assert c.rename("INBOX", "Old")[0] == "OK"
    assert c.status("INBOX", "(MESSAGES)")[1] == [b"INBOX (MESSAGES 0)"]
    assert c.status("Old", "(MESSAGES)")[1] == [b'"Old" (MESSAGES 1)']


def test_check_noop_logout(connect):
    c = connect()
    c.select("INBOX")
    assert c.check()[0] == "OK"
    assert c.noop()[0] == "OK"
    assert c.logout()[0] == "BYE"


def test_two_sessions_see_each_others_expunge_and_flags(connect, store):
    for i in range(3):
        store.deliver(message(f"shared{i}"))
    a, b = connect(), connect()
    a.select("INBOX")
    b.select("INBOX")
    a.store("2", "+FLAGS", "(\\Deleted)")
    a.expunge()
    b.store("1", "+FLAGS", "(\\Flagged)")
    typ, data = b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"2"]
    typ, _ = a.noop()
    assert a.untagged_responses.get("FETCH") == [b"1 (FLAGS (\\Flagged))"]
    store.deliver(message("late"))
    b.untagged_responses.clear()
    b.noop()
    assert b.untagged_responses.get("EXISTS") == [b"3"]


def test_expunge_not_sent_during_fetch(connect, store):
    """RFC 3501 §7.4.1: a FETCH must not carry EXPUNGE; the next NOOP does."""
    for i in range(2):
        store.deliver(message(f"e{i}"))
    a, b = connect(), connect()
    a.select("INBOX")
    b.select("INBOX")
    a.store("1", "+FLAGS", "(\\Deleted)")
    a.expunge()
    typ, data = b.fetch("1:*", "(UID)")
    assert "EXPUNGE" not in b.untagged_responses
    b.noop()
    assert b.untagged_responses.get("EXPUNGE") == [b"1"]


def test_raw_literal_plus_and_bad_syntax_stays_connected(imap_server, user):
    with socket.create_connection(("127.0.0.1", imap_server.port("imap"))) as s:
        f = s.makefile("rwb")
        f.readline()
        f.write(f"a LOGIN {{{len(user)}+}}\r\n{user} {PASSWORD}\r\n".encode())
        f.flush()
        assert f.readline().startswith(b"a OK")
        f.write(b"b FETCH (\r\nc NOOP\r\n")
        f.flush()
        assert f.readline().startswith(b"b BAD")
        assert f.readline() == b"c OK NOOP completed\r\n"


def test_big_message_streamed_byte_exact(connect, store):
    """Bodies above 1 MB go straight from the file in chunks; the bytes must not change."""
    lines = b"".join(b"line %07d of a big message, padded to some length....\r\n" % i
                     for i in range(60000))
    big = message("big", body="") + lines
    store.deliver(big)
    c = connect()
    c.select("INBOX")
    typ, data = c.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
    assert data[0][0].endswith(b"BODY[] {%d}" % len(big))
    assert data[0][1] == big
    typ, data = c.fetch("1", "(RFC822)")
    assert data[0][1] == big
    typ, data = c.fetch("1", "(BODY.PEEK[]<1000000.20>)")
    assert data[0][1] == big[1000000:1000020]
    assert b"\\Seen" in c.fetch("1", "(FLAGS)")[1][0]
