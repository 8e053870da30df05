"""Folder names: modified UTF-7 (RFC 3501 §5.1.3) and hostile-name refusal."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.maildir import FolderNameError, MailStore, decode_mutf7, encode_mutf7
from mailyard.maildir.names import normalize


@pytest.mark.parametrize("text, encoded", [
    # RFC 3501 §5.1.3 example
    ("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
    ("Entw\u00fcrfe", "Entw&APw-rfe"),
    ("A&B", "A&-B"),
    ("plain", "plain"),
    ("\U0001f4e7 mail", "&2D3c5w- mail"),
])
def test_mutf7_known_values(text, encoded):
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@given(st.text(max_size=40))
def test_mutf7_roundtrip(text):
    assert decode_mutf7(encode_mutf7(text)) == text


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=30))
def test_decode_arbitrary_ascii_only_raises_name_error(text):
    try:
        decode_mutf7(text)
    except FolderNameError:
        pass


@pytest.mark.parametrize("bad", ["&Jjo", "&AGE-", "&!!-", "caf\u00e9"])
def test_decode_refuses_malformed(bad):
    with pytest.raises(FolderNameError):
        decode_mutf7(bad)


@pytest.mark.parametrize("hostile", [
    "", "..", "a..b", ".hidden", "trailing.", "../../etc", "a/b", "/etc/passwd", "a\\b",
    "nul\x00byte", "new\nline", "tab\there", "del\x7f", "wild*", "wild%", " ", "a. .b",
    "x" * 201, "a." * 20 + "a", "\u00e9" * 150,
])
def test_hostile_names_refused(tmp_path, hostile):
    store = MailStore(tmp_path / "Maildir")
    with pytest.raises(FolderNameError):
        store.create_folder(hostile)
    with pytest.raises(FolderNameError):
        store.deliver(b"Subject: x\r\n\r\nx\r\n", folder=hostile)
    # Nothing escaped the root.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Maildir"]


def test_inbox_is_case_insensitive():
    assert normalize("inbox") == "INBOX"
    assert normalize("Inbox.Sub") == "INBOX.Sub"
    assert normalize("Inboxes") == "Inboxes"
