"""SPAMC/SPAMD protocol core, without sockets: table-driven requests, formats, fuzz."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.spam import RuleHit, SpamVerdict
from mailyard.spam import spamd_proto as proto

MSG = b"Subject: hi\r\nFrom: a@example.org\r\n\r\nbody\r\n"
VERDICT = SpamVerdict(score=7.25, required=5.0, is_spam=True,
                      hits=(RuleHit("A_RULE", 4.0, "first"), RuleHit("B_RULE", 3.25, "second")),
                      bayes_probability=None, autolearn="no")


def parse(data: bytes, eof: bool = True, chunk: int = 0):
    parser = proto.SpamdRequestParser(max_body=1 << 20)
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        parser.receive_data(piece)
    if eof:
        parser.receive_eof()
    return parser.next_request()


@pytest.mark.parametrize("chunk", [0, 1, 7])
def test_check_request(chunk):
    data = (b"CHECK SPAMC/1.5\r\nContent-length: %d\r\nUser: alice\r\n\r\n" % len(MSG)) + MSG
    req = parse(data, eof=False, chunk=chunk)
    assert (req.verb, req.version, req.user, req.body) == ("CHECK", (1, 5), "alice", MSG)


def test_need_data_until_body_complete():
    parser = proto.SpamdRequestParser()
    parser.receive_data(b"PROCESS SPAMC/1.5\r\nContent-length: 10\r\n\r\n12345")
    assert parser.next_request() is proto.NEED_DATA
    parser.receive_data(b"67890")
    assert parser.next_request().body == b"1234567890"


@pytest.mark.parametrize("data", [b"PING SPAMC/1.5\r\n", b"PING SPAMC/1.5\r\n\r\n",
                                  b"SKIP SPAMC/1.5\r\n\r\n"])
def test_ping_and_skip(data):
    assert parse(data, eof=False).verb in ("PING", "SKIP")


def test_no_content_length_reads_to_eof():
    req = parse(b"SYMBOLS SPAMC/1.2\r\n\r\n" + MSG, eof=True)
    assert req.body == MSG


def test_zlib_body():
    packed = zlib.compress(MSG)
    req = parse(b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n"
                % len(packed) + packed)
    assert req.body == MSG


@pytest.mark.parametrize("data,status", [
    (b"HELLO SPAMC/1.5\r\n\r\n", proto.EX_PROTOCOL),
    (b"CHECK HTTP/1.1\r\n\r\n", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nContent-length: x\r\n\r\n", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nContent-length: -1\r\n\r\n", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nContent-length: 999999999\r\n\r\n", proto.EX_TOOBIG),
    (b"CHECK SPAMC/1.5\r\nContent-length: 50\r\n\r\nshort", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nno colon here\r\n\r\n", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: 4\r\n\r\nabcd", proto.EX_PROTOCOL),
    (b"CHECK SPAMC/1.5\r\nCompress: gzip\r\nContent-length: 4\r\n\r\nabcd", proto.EX_PROTOCOL),
    (b"", proto.EX_PROTOCOL),
])
def test_refused_requests(data, status):
    with pytest.raises(proto.SpamdProtocolError) as info:
        parse(data)
    assert info.value.status == status


def test_zlib_bomb_is_refused():
    bomb = zlib.compress(b"\0" * (4 << 20), 9)
    parser = proto.SpamdRequestParser(max_body=1 << 20)
    parser.receive_data(b"CHECK SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n"
                        % len(bomb) + bomb)
    with pytest.raises(proto.SpamdProtocolError) as info:
        parser.next_request()
    assert info.value.status == proto.EX_TOOBIG


def test_header_block_limit():
    parser = proto.SpamdRequestParser()
    with pytest.raises(proto.SpamdProtocolError):
        parser.receive_data(b"CHECK SPAMC/1.5\r\n" + b"X: y\r\n" * 20000)


def test_response_formats():
    assert proto.format_pong() == b"SPAMD/1.5 0 PONG\r\n"
    assert proto.format_check(VERDICT) == \
        b"SPAMD/1.5 0 EX_OK\r\nSpam: True ; 7.2 / 5.0\r\nContent-length: 0\r\n\r\n"
    assert proto.format_symbols(VERDICT).endswith(b"\r\n\r\nA_RULE,B_RULE")
    report = proto.format_report(VERDICT, "mx.test")
    assert b" 4.0 A_RULE                 first" in report
    assert proto.format_report(
        SpamVerdict(1.0, 5.0, False, (), None, "no"), "mx", only_if_spam=True
    ).endswith(b"Content-length: 0\r\n\r\n")
    assert proto.format_tell(["local"], []) == \
        b"SPAMD/1.5 0 EX_OK\r\nDidSet: local\r\nContent-length: 0\r\n\r\n"
    assert proto.format_error(proto.EX_PROTOCOL, "bad") == b"SPAMD/1.5 76 EX_PROTOCOL bad\r\n\r\n"


def test_process_replaces_forged_spam_headers():
    forged = b"X-Spam-Status: No, forged\r\n\tcontinued\r\nX-Spam-Flag: NO\r\n" + MSG
    out = proto.rewrite_message(forged, VERDICT, "mx.test", "0.1")
    assert b"forged" not in out and b"continued" not in out
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"X-Spam-Flag: YES" in head and b"tests=A_RULE,B_RULE" in head
    assert body == b"body\r\n"
    headers = proto.format_headers(MSG, VERDICT, "mx.test", "0.1")
    assert headers.endswith(b"X-Spam-Flag: YES\r\nX-Spam-Score: 7.2\r\n"
                            b"X-Spam-Level: *******\r\nX-Spam-Status: Yes, score=7.2 "
                            b"required=5.0 tests=A_RULE,B_RULE autolearn=no\r\n\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_fuzz_parser_raises_only_protocol_errors(data, chunk):
    parser = proto.SpamdRequestParser(max_body=4096)
    try:
        for i in range(0, len(data), chunk):
            parser.receive_data(data[i:i + chunk])
            parser.next_request()
        parser.receive_eof()
        parser.next_request()
    except proto.SpamdProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(proto.VERBS_WITH_BODY)), st.binary(max_size=300))
def test_fuzz_valid_requests_roundtrip(verb, body):
    data = f"{verb} SPAMC/1.5\r\nContent-length: {len(body)}\r\n\r\n".encode() + body
    req = parse(data, eof=False)
    assert req.verb == verb and req.body == body
