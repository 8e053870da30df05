"""ENVELOPE, BODYSTRUCTURE and BODY[section] from the byte-offset MIME parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.imap.proto import format as fmt
from mailyard.imap.proto import mime
from mailyard.imap.proto.envelope import address_list, envelope
from mailyard.imap.proto.types import Section

NESTED = (b"From: \"Bob Q\" <bob@example.com>\r\n"
          b"To: undisclosed-recipients:;\r\n"
          b"Subject: =?utf-8?q?h=C3=A9llo?=\r\n"
          b"MIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
          b"preamble\r\n--XX\r\n"
          b"Content-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
          b"caf=C3=A9\r\nline2\r\n"
          b"--XX\r\n"
          b"Content-Type: message/rfc822\r\n"
          b"Content-Disposition: attachment; filename=\"fwd.eml\"\r\n\r\n"
          b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=YY\r\n\r\n"
          b"--YY\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
          b"--YY\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--YY--\r\n"
          b"--XX\r\n"
          b"Content-Type: application/pdf; name=a.pdf\r\nContent-Transfer-Encoding: base64\r\n"
          b"Content-Language: en, de\r\n\r\n"
          b"JVBERi0=\r\n"
          b"--XX--\r\nepilogue\r\n")


@pytest.mark.parametrize("section, expected", [
    (Section(), NESTED),
    (Section((1,)), b"caf=C3=A9\r\nline2"),
    (Section((1,), "MIME"), b"Content-Type: text/plain; charset=utf-8\r\n"
                            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"),
    (Section((2,), "HEADER"), b"Subject: inner\r\n"
                              b"Content-Type: multipart/alternative; boundary=YY\r\n\r\n"),
    (Section((2, 1)), b"plain"),
    (Section((2, 2)), b"<p>html</p>"),
    (Section((3,)), b"JVBERi0="),
    (Section((4,)), b""),
    (Section((), "HEADER.FIELDS", ("SUBJECT", "X-NONE")),
     b"Subject: =?utf-8?q?h=C3=A9llo?=\r\n\r\n"),
    (Section((), "HEADER.FIELDS.NOT", ("FROM", "TO", "SUBJECT", "MIME-VERSION")),
     b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"),
])
def test_sections(section, expected):
    root = mime.parse_message(NESTED)
    assert mime.section_bytes(NESTED, root, section) == expected


def test_bodystructure_nested_with_extension_data():
    root = mime.parse_message(NESTED)
    assert mime.body_structure(NESTED, root, True) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 16 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 161 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL '
        b'NIL) (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 11 0 NIL NIL NIL NIL) "alternative" ("boundary" '
        b'"YY") NIL NIL NIL) 11 NIL ("attachment" ("filename" "fwd.eml")) NIL NIL)'
        b'("application" "pdf" ("name" "a.pdf") NIL NIL "base64" 8 NIL NIL ("en" "de") NIL) '
        b'"mixed" ("boundary" "XX") NIL NIL NIL)')


def test_body_has_no_extension_data():
    root = mime.parse_message(b"Subject: x\r\n\r\nhi\r\n")
    assert mime.body_structure(b"Subject: x\r\n\r\nhi\r\n", root, False) == \
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 4 1)'


def test_envelope_defaults_sender_and_reply_to_to_from():
    root = mime.parse_message(NESTED)
    bob = b'(("Bob Q" NIL "bob" "example.com"))'
    assert envelope(root.headers) == (
        b'(NIL "=?utf-8?q?h=C3=A9llo?=" ' + bob + b" " + bob + b" " + bob +
        b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)')


@pytest.mark.parametrize("value, expected", [
    (b"a@b.c", b'((NIL NIL "a" "b.c"))'),
    (b"A <a@b.c>, \"Q, R\" <q@r.s>", b'(("A" NIL "a" "b.c")("Q, R" NIL "q" "r.s"))'),
    (b"a@b.c (Comment Name)", b'(("Comment Name" NIL "a" "b.c"))'),
    (b"team: x@y.z, w@y.z;", b'((NIL NIL "team" NIL)(NIL NIL "x" "y.z")(NIL NIL "w" "y.z")'
                             b'(NIL NIL NIL NIL))'),
    (b"<@r1,@r2:c@d>", b'((NIL "@r1,@r2" "c" "d"))'),
    (b"", b"NIL"),
    (b"localonly", b'((NIL NIL "localonly" NIL))'),
])
def test_address_lists(value, expected):
    assert address_list(value) == expected


def test_string_quoting_and_literals():
    assert fmt.string(b'say "hi"\\') == b'"say \\"hi\\"\\\\"'
    assert fmt.string("caf\u00e9") == b"{5}\r\ncaf\xc3\xa9"
    assert fmt.string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert fmt.astring("INBOX") == b"INBOX"
    assert fmt.mailbox_name("Entwürfe") == b'"Entw&APw-rfe"'


def test_broken_mime_never_raises():
    data = b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\nno end"
    root = mime.parse_message(data)
    assert len(root.children) == 1
    assert mime.body_structure(data, root, True).startswith(b"((")


def test_mime_nesting_bomb_is_capped():
    data = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                    for i in range(500)) + b"x"
    root = mime.parse_message(data)
    depth = 0
    while root.children:
        root = root.children[0]
        depth += 1
    assert depth <= mime.MAX_DEPTH


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_mime_structure(data):
    root = mime.parse_message(data)
    mime.body_structure(data, root, True)
    envelope(root.headers)
    mime.section_bytes(data, root, Section((1, 1), "MIME"))


EMPTY_MULTIPART = b"Content-Type: multipart/mixed; boundary=Q\r\n\r\nno parts at all\r\n"


@pytest.mark.parametrize("data", [NESTED, EMPTY_MULTIPART, b"Subject: x\r\n\r\nbody\r\n",
                                  b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n"])
def test_body_structures_one_walk_equals_two(data):
    """The cache's one-walk (BODYSTRUCTURE, BODY) pair is byte-identical to the two walks."""
    root = mime.parse_message(data)
    assert mime.body_structures(data, root) == (mime.body_structure(data, root, True),
                                                mime.body_structure(data, root, False))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_body_structures_one_walk_equals_two(data):
    root = mime.parse_message(data)
    assert mime.body_structures(data, root) == (mime.body_structure(data, root, True),
                                                mime.body_structure(data, root, False))
