"""DATA transparency (RFC 5321 §4.5.2): decoder and encoder, streaming, fuzzed."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailyard.smtp import DataDecoder, DataEncoder, dot_stuff


def decode_all(wire: bytes, pieces: list[int] | None = None, mode: str = "reject"):
    decoder = DataDecoder(mode)
    out, rest, done = b"", b"", False
    cuts = sorted(set(pieces or []))
    start = 0
    for cut in cuts + [len(wire)]:
        if done:
            break
        content, done, rest = decoder.feed(wire[start:cut])
        out += content
        start = cut
    return out, done, rest + (wire[start:] if done else b""), decoder


def crlf(content: bytes) -> bytes:
    return re.sub(rb"\r\n|\r|\n", b"\r\n", content)


def test_stuffing_examples():
    assert dot_stuff(b"") == b".\r\n"
    assert dot_stuff(b"a") == b"a\r\n.\r\n"
    assert dot_stuff(b"a\r\n") == b"a\r\n.\r\n"
    assert dot_stuff(b".a\r\n.\r\n") == b"..a\r\n..\r\n.\r\n"
    assert dot_stuff(b"a\n.b\r") == b"a\r\n..b\r\n.\r\n"


def test_encoder_cr_split_across_chunks():
    enc = DataEncoder()
    wire = enc.encode(b"a\r") + enc.encode(b"\n.b") + enc.end()
    assert wire == b"a\r\n..b\r\n.\r\n"


def test_decoder_keeps_rest_after_terminator():
    out, done, rest, _ = decode_all(b"x\r\n.\r\nQUIT\r\n")
    assert (out, done, rest) == (b"x\r\n", True, b"QUIT\r\n")


@given(st.binary(max_size=300), st.lists(st.integers(0, 400), max_size=6))
def test_roundtrip_any_content(content, cuts):
    """Whatever the content and however TCP splits it, the receiver gets it whole."""
    wire = dot_stuff(content)
    out, done, rest, decoder = decode_all(wire, [c for c in cuts if c <= len(wire)])
    assert done and rest == b""
    expected = crlf(content)
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert out == expected
    assert not decoder.bare_newline


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_decoder_chunking_invariant(wire, cuts):
    """Feeding in pieces gives exactly what feeding at once gives."""
    whole = decode_all(wire)
    pieced = decode_all(wire, cuts)
    assert whole[:3] == pieced[:3]


@given(st.binary(max_size=300))
def test_normalized_output_has_only_crlf(wire):
    out, _done, _rest, _ = decode_all(wire, mode="normalize")
    stripped = out.replace(b"\r\n", b"")
    assert b"\r" not in stripped and b"\n" not in stripped


@given(st.binary(max_size=200))
def test_terminator_only_at_crlf_dot_crlf(wire):
    """DATA ends at the first CRLF.CRLF, and at no other byte sequence."""
    full = b"\r\n" + wire
    _, done, rest, _ = decode_all(full)
    first = full.find(b"\r\n.\r\n")
    assert done == (first >= 0)
    if done:
        assert len(full) - len(rest) == first + 5


def reference_decode(wire: bytes) -> tuple[bytes, bool]:
    """A plain, whole-buffer reading of RFC 5321 §4.5.2 for CRLF-only input."""
    out = []
    for line in wire.split(b"\r\n")[:-1]:
        if line == b".":
            return b"".join(out), True
        out.append((line[1:] if line.startswith(b".") else line) + b"\r\n")
    return b"".join(out), False


crlf_lines = st.lists(st.sampled_from([b"", b".", b"..", b".x", b"x.", b"text", b"a.b",
                                       b"...", b"x" * 70]), max_size=30)


@given(crlf_lines, st.lists(st.integers(0, 2000), max_size=8))
def test_streaming_matches_reference(lines, cuts):
    """The fast path and the slow path agree with a plain reading, however it is cut."""
    wire = b"".join(line + b"\r\n" for line in lines)
    expected, ended = reference_decode(wire)
    out, done, _, _ = decode_all(wire, [c for c in cuts if c <= len(wire)])
    assert done == ended
    assert out == expected


def test_crlf_fast_path_empty_piece_keeps_line_start():
    """Regression (perf fast path): an empty piece must not move the decoder off a line
    start, or the terminator after it would be taken for content."""
    decoder = DataDecoder()
    assert decoder.feed(b"a\r\n") == (b"a\r\n", False, b"")
    assert decoder.feed(b"") == (b"", False, b"")
    assert decoder.feed(b".\r\nQUIT\r\n") == (b"", True, b"QUIT\r\n")


def test_crlf_fast_path_whole_message_with_stuffed_dots():
    wire = b"..one\r\nx\r\n...two\r\n.\r\nMAIL FROM:<a@b>\r\n"
    assert DataDecoder().feed(wire) == (b".one\r\nx\r\n..two\r\n", True,
                                        b"MAIL FROM:<a@b>\r\n")
