"""Paths, mailboxes and ESMTP parameters (RFC 5321 §4.1.2, RFC 6531, RFC 3461)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailyard.smtp import AddressError, parse_params, parse_path, xtext_decode, xtext_encode
from mailyard.smtp.address import Mailbox, parse_mailbox

GOOD = [
    # (text, address, route)
    ("<user@example.com>", "user@example.com", ()),
    ("<>", "", ()),
    ("<first.last+tag@sub.example.com>", "first.last+tag@sub.example.com", ()),
    ('<"john doe"@example.com>', '"john doe"@example.com', ()),
    ('<"plain"@example.com>', "plain@example.com", ()),
    ('<"a\\"b"@example.com>', '"a\\"b"@example.com', ()),
    ('<"user@remote"@example.com>', '"user@remote"@example.com', ()),
    ("<@a.example,@b.example:user@c.example>", "user@c.example", ("a.example", "b.example")),
    ("<@a.example:user@c.example>", "user@c.example", ("a.example",)),
    ("<user@[192.0.2.1]>", "user@[192.0.2.1]", ()),
    ("<user@[IPv6:2001:db8::1]>", "user@[IPv6:2001:db8::1]", ()),
    ("<user%other@example.com>", "user%other@example.com", ()),
    ("<jürgen@bücher.example>", "jürgen@bücher.example", ()),
    ("<x@xn--bcher-kva.example>", "x@xn--bcher-kva.example", ()),
]

BAD = [
    "user@example.com",           # no brackets
    "<user@example.com",
    "<user>",                     # no domain
    "<@example.com>",
    "<user@>",
    "<user@example.com.>",        # trailing dot
    "<user@.example.com>",
    "<user@exa mple.com>",
    "<user@local@remote>",
    "<.user@example.com>",
    "<user.@example.com>",
    "<us..er@example.com>",
    "<user@[300.1.1.1]>",
    "<user@[IPv6:zz::1]>",
    '<"unterminated@example.com>',
    '<"a"b@example.com>',
    "<@a.example user@c.example>",  # route without ':'
    "<a.example:user@c.example>",
    "<user@-example.com>",
    "<user@example-.com>",
    "<" + "a" * 65 + "@example.com>",
    "<user@" + "a" * 250 + ".com>",
]


@pytest.mark.parametrize("text,address,route", GOOD)
def test_good_paths(text, address, route):
    path = parse_path(text, null_ok=True)
    assert path.address == address
    assert path.route == route


@pytest.mark.parametrize("text", BAD)
def test_bad_paths(text):
    with pytest.raises(AddressError) as info:
        parse_path(text)
    assert info.value.reply.code == 501


def test_null_path_only_where_allowed():
    with pytest.raises(AddressError):
        parse_path("<>")
    assert parse_path("<>", null_ok=True).is_null


def test_utf8_needs_flag():
    with pytest.raises(AddressError):
        parse_path("<jürgen@example.com>", utf8=False)


def test_postmaster():
    path = parse_path("<Postmaster>", postmaster_ok=True)
    assert path.postmaster and path.address == "postmaster"
    with pytest.raises(AddressError):
        parse_path("<Postmaster>")


def test_params():
    assert parse_params(" SIZE=100  BODY=8BITMIME smtputf8") == {
        "SIZE": "100", "BODY": "8BITMIME", "SMTPUTF8": None}
    for bad in ("=x", "SIZE=", "A=b=c", "SIZE=1 size=2", "-X=1"):
        with pytest.raises(AddressError):
            parse_params(bad)


def test_xtext():
    assert xtext_decode("rfc822+3Buser+40example.com") == "rfc822;user@example.com"
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    with pytest.raises(AddressError):
        xtext_decode("+4")


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40))
def test_xtext_roundtrip(text):
    assert xtext_decode(xtext_encode(text)) == text


local_atoms = st.from_regex(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}", fullmatch=True)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)


@given(st.lists(local_atoms, min_size=1, max_size=3), st.lists(labels, min_size=1, max_size=3))
def test_mailbox_roundtrip(atoms, domain_labels):
    mailbox = Mailbox(".".join(atoms), ".".join(domain_labels))
    assert parse_mailbox(str(mailbox)) == mailbox


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1,
               max_size=20))
def test_quoted_local_roundtrip(local):
    mailbox = Mailbox(local, "example.com")
    assert parse_mailbox(str(mailbox)) == mailbox


@given(st.text(max_size=80))
def test_parse_path_never_crashes(text):
    try:
        parse_path(text, null_ok=True, postmaster_ok=True)
    except AddressError:
        pass
