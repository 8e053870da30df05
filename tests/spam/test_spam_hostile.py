"""Hostile input: every case gets a verdict, in bounded time and memory.

No timed assertions here (pytest-timeout bounds the run); speed is measured in bench/.
"""

from __future__ import annotations

import pytest

from mailyard.spam.message import MAX_DEPTH, ParsedMessage

HEAD = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: x\r\n"


@pytest.mark.timeout(60)
def test_fifty_megabyte_message(builtin_engine):
    msg = HEAD + b"\r\n" + (b"A" * 76 + b"\r\n") * (50 * 1024 * 1024 // 78)
    verdict = builtin_engine.scan(msg)
    assert verdict.score >= 0 or verdict.score < 0


@pytest.mark.timeout(60)
def test_one_megabyte_header_line(builtin_engine):
    msg = b"Subject: " + b"x" * (1 << 20) + b"\r\n" + HEAD + b"\r\nbody\r\n"
    verdict = builtin_engine.scan(msg)
    assert isinstance(verdict.hits, tuple)


@pytest.mark.timeout(60)
def test_deeply_nested_mime(builtin_engine):
    depth = 5000
    parts = [HEAD, b"MIME-Version: 1.0\r\n"]
    for i in range(depth):
        parts.append(f"Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
                     .encode())
    parts.append(b"Content-Type: text/plain\r\n\r\ndeep\r\n")
    msg = b"".join(parts)
    parsed = ParsedMessage.parse(msg)
    assert "mime_too_deep" in parsed.flags
    assert builtin_engine.scan(msg).rule_names.count("MIME_TOO_DEEP") == 1
    assert MAX_DEPTH < depth


@pytest.mark.timeout(60)
def test_many_parts(builtin_engine):
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n" for _ in range(20000))
    msg = HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n"
    verdict = builtin_engine.scan(msg)
    assert "MIME_TOO_MANY_PARTS" in verdict.rule_names


@pytest.mark.parametrize("charset", [b"x-no-such-charset", b"utf-7", b"utf-16", b"idna",
                                     b"rot13", b"base64", b"\xff\xfe", b"unicode-1-1-utf-7"])
def test_bad_charsets(builtin_engine, charset):
    msg = (HEAD + b"Subject: =?" + charset + b"?B?//79/Q==?=\r\n"
           b"Content-Type: text/plain; charset=\"" + charset + b"\"\r\n\r\n"
           b"\xff\xfe\x00\xd8 caf\xe9 \xed\xa0\x80\r\n")
    verdict = builtin_engine.scan(msg)
    assert isinstance(verdict.score, float)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("html", [
    b"<" * 1_000_000,
    b"<!--" * 200_000,
    b"<a href=\"" * 200_000,
    b"<div>" * 200_000,
    b"<p " + b"a=b " * 200_000 + b">",
    b"&#" + b"9" * 1_000_000 + b";",
    b"<script>" + b"x" * 1_000_000,
    b"<a href='http://x/" + b"%" * 500_000 + b"'>",
])
def test_pathological_html(builtin_engine, html):
    msg = HEAD + b"Content-Type: text/html\r\n\r\n" + html + b"\r\n"
    verdict = builtin_engine.scan(msg)
    assert isinstance(verdict.hits, tuple)


@pytest.mark.parametrize("raw", [b"", b"\r\n", b"no colon at all", b"\x00" * 1000,
                                 b"Content-Type: multipart/mixed\r\n\r\nno boundary",
                                 b"Content-Transfer-Encoding: base64\r\n\r\n!!!!====",
                                 b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=",
                                 b"From:\r\n\tcontinued\r\n \r\n\r\n",
                                 b"Subject: =?utf-8?B?not base64 at all?=\r\n\r\n"])
def test_malformed_messages_scan(builtin_engine, raw):
    assert isinstance(builtin_engine.scan(raw).score, float)


@pytest.mark.timeout(120)
def test_stock_rules_on_hostile_input(stock_engine):
    msg = HEAD + b"Content-Type: text/html\r\n\r\n" + b"<a href=x>" * 50000 + \
        b" " + b"a" * 300_000 + b"\r\n"
    assert isinstance(stock_engine.scan(msg).score, float)


from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

_PIECES = st.sampled_from([b"Content-Type: multipart/mixed; boundary=b\r\n", b"--b\r\n",
                           b"--b--\r\n", b"\r\n", b"Subject: =?utf-8?B?", b"?=\r\n",
                           b"Content-Transfer-Encoding: base64\r\n", b"<a href='", b"<!--",
                           b"Content-Type: text/html; charset=\"x\"\r\n", b"\xff\xfe", b"=\r\n",
                           b"From: <@>\r\n", b"\t folded\r\n"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=40)), max_size=40))
def test_fuzz_scan_never_raises(builtin_engine, pieces):
    verdict = builtin_engine.scan(b"".join(pieces))
    assert verdict.required == 5.0
