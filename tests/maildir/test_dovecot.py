"""A Maildir written the way Dovecot writes it is read as it is (UIDs, flags, keywords)."""

import os

import pytest

from mailyard.maildir import MailStore

LF_MSG = b"From: d@example.test\nSubject: from dovecot\n\nline one\nline two\n"
CRLF_SIZE = len(LF_MSG.replace(b"\n", b"\r\n"))


@pytest.fixture
def dovecot_maildir(tmp_path):
    """INBOX with a v3 dovecot-uidlist, keywords, `,S=`/`,W=` names and `:2,` flags."""
    root = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    size = len(LF_MSG)
    names = {
        7: f"1700000000.M1P2.mx,S={size},W={CRLF_SIZE}",
        9: f"1700000100.M5P2.mx,S={size},W={CRLF_SIZE}",
        12: f"1700000200.M9P2.mx,S={size}",  # no W=: the size must be computed
    }
    (root / "cur" / (names[7] + ":2,RSa")).write_bytes(LF_MSG)
    (root / "cur" / (names[9] + ":2,FTb")).write_bytes(LF_MSG)
    (root / "new" / names[12]).write_bytes(LF_MSG)
    os.utime(root / "cur" / (names[7] + ":2,RSa"), (1700000000, 1700000000))
    (root / "dovecot-uidlist").write_text(
        "3 V1699999999 N13 G3085f01b7f11094c501100008c4a11c1\n"
        f"7 :{names[7]}\n"
        f"9 W{CRLF_SIZE} :{names[9]}\n"
        f"12 :{names[12]}\n")
    (root / "dovecot-keywords").write_text("0 $Forwarded\n1 Important\n")
    # A folder with a v1 uidlist and a modified UTF-7 name.
    sub = root / ".Entw&APw-rfe"
    for d in ("cur", "new", "tmp"):
        (sub / d).mkdir(parents=True)
    (sub / "cur" / "1600000000.M1P1.old:2,S").write_bytes(LF_MSG)
    (sub / "dovecot-uidlist").write_text("1 1500000000 4\n3 1600000000.M1P1.old\n")
    (root / "subscriptions").write_text("V\t2\n\nEntw&APw-rfe\n")
    return root


def test_dovecot_inbox_keeps_uids_flags_keywords(dovecot_maildir):
    store = MailStore(dovecot_maildir)
    folder = store.open("INBOX")
    assert folder.uid_validity == 1699999999
    assert folder.uids() == [7, 9, 12]
    assert folder.uid_next == 13
    m7, m9, m12 = folder.messages()
    assert m7.flags == {"\\Answered", "\\Seen"} and m7.keywords == {"$Forwarded"}
    assert m9.flags == {"\\Flagged", "\\Deleted"} and m9.keywords == {"Important"}
    assert m12.flags == frozenset()
    assert [m.size for m in (m7, m9, m12)] == [CRLF_SIZE] * 3
    assert int(m7.internal_date) == 1700000000
    assert folder.read(12) == LF_MSG.replace(b"\n", b"\r\n")
    # A new delivery continues after Dovecot's next UID.
    assert store.deliver(b"Subject: new\r\n\r\nx\r\n") == 13


def test_dovecot_flag_change_writes_dovecot_letters(dovecot_maildir):
    store = MailStore(dovecot_maildir)
    folder = store.open("INBOX")
    folder.store_flags([12], ["Important", "\\Seen"])
    (name,) = [n for n in os.listdir(dovecot_maildir / "cur") if n.startswith("1700000200")]
    assert name.endswith(":2,Sb")  # "Important" is keyword 1 in dovecot-keywords


def test_dovecot_folders_and_subscriptions(dovecot_maildir):
    store = MailStore(dovecot_maildir)
    folders = {f.name: f for f in store.list_folders()}
    assert folders["Entw\u00fcrfe"].subscribed
    sub = store.open("Entw\u00fcrfe")
    assert sub.uid_validity == 1500000000
    assert sub.uids() == [3]
    assert sub.uid_next == 4
    assert sub.get(3).flags == {"\\Seen"}


def test_dovecot_usage_uses_size_hints(dovecot_maildir):
    store = MailStore(dovecot_maildir)
    used, count = store.usage()
    assert count == 4
    # W= where Dovecot wrote it, else S=, else the file size.
    assert used == 2 * CRLF_SIZE + 2 * len(LF_MSG)
