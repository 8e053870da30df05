"""Hostile bytes in the places the store parses: file names, Dovecot files, folder dirs."""

import contextlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.maildir import MailStore
from mailyard.maildir.dovecot import read_keywords, read_uidlist
from mailyard.maildir.files import letters_to_flags, parse_entry
from mailyard.maildir.names import name_from_dir

names = st.text(alphabet=st.characters(blacklist_characters="/\x00"), min_size=1,
               max_size=60).filter(lambda n: n not in (".", ".."))


@given(st.sampled_from(["new", "cur"]), names)
def test_parse_entry_never_raises(subdir, entry):
    parsed = parse_entry(subdir, entry)
    if parsed is not None:
        assert parsed.filename == f"{subdir}/{entry}"
        letters_to_flags(parsed.letters, {"a": "kw"})
        parsed.size_hint, parsed.vsize_hint  # noqa: B018 - must not raise


@given(names)
def test_name_from_dir_never_raises(entry):
    name = name_from_dir(entry)
    assert name is None or ("/" not in name and "\x00" not in name)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=200))
def test_dovecot_files_never_raise(tmp_path_factory, uidlist, keywords):
    d = tmp_path_factory.mktemp("dv")
    (d / "dovecot-uidlist").write_bytes(uidlist)
    (d / "dovecot-keywords").write_bytes(keywords)
    result = read_uidlist(d)
    assert result is None or result.uid_validity > 0
    assert all("a" <= k <= "z" for k in read_keywords(d))


raw_names = st.binary(min_size=1, max_size=60).filter(
    lambda n: b"/" not in n and b"\x00" not in n and n not in (b".", b".."))


@settings(max_examples=25, deadline=None)
@given(st.lists(raw_names, max_size=8))
def test_store_survives_arbitrary_files_in_maildir(tmp_path_factory, entries):
    root = tmp_path_factory.mktemp("md") / "Maildir"
    store = MailStore(root)
    store.deliver(b"Subject: real\r\n\r\nx\r\n")
    base = os.fsencode(root)
    for i, entry in enumerate(entries):
        sub = b"cur" if i % 2 else b"new"
        fd = os.open(base + b"/" + sub + b"/" + entry, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.mkdir(base + b"/." + entry)
    folder = store.open("INBOX")
    folder.refresh()
    assert folder.read(1).startswith(b"Subject: real")
    store.list_folders()
    store.recount_usage()


def _stuffed_by_lines(crlf: bytes) -> bytes:
    """Reference dot-stuffing, one line at a time (RFC 1939 §3), final CRLF supplied."""
    if not crlf:
        return b""
    lines = crlf.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n"
                    for line in lines)


@given(st.binary(max_size=300) | st.lists(st.sampled_from(
    [b".", b"..", b"\r\n", b"\n", b"\r", b"a", b".x\r\n", b"\r\n.\r\n"]), max_size=30).map(b"".join))
def test_dot_lines_give_the_transfer_form(raw):
    from mailyard.maildir.files import dot_lines, to_crlf

    crlf = to_crlf(raw)
    lines = dot_lines(crlf)
    if lines is None:
        assert crlf and not crlf.endswith(b"\r\n")
        return
    offsets = [int(o) for o in lines.split()]
    bounds = [0, *offsets, len(crlf)]
    pieces = [crlf[a:b] for a, b in zip(bounds, bounds[1:])]
    assert b".".join(pieces) == _stuffed_by_lines(crlf)
