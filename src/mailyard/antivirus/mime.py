"""Taking a message apart into the files inside it.

Every leaf MIME part is decoded (RFC 2045 §6: base64, quoted-printable; and the
non-standard x-uuencode), `message/rfc822` parts are walked as messages of their own, and
uuencoded blocks inside text bodies (`begin 644 name` … `end`, still sent by old mailers
and by malware) are pulled out too. The parser is the standard library's, in its lenient
compat32 mode: broken MIME yields what can be read, never an exception.
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.message import Message

_UU_BEGIN = re.compile(rb"^begin [0-7]{3,4} ([^\r\n]+)\r?$", re.MULTILINE)


@dataclass(frozen=True)
class Part:
    """One decoded leaf of a message: a file for the scanner."""

    name: str
    content_type: str
    data: bytes
    depth: int  # 1 for a part of the top-level message, +1 per enclosed message


def parse(raw: bytes) -> Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


def parts(raw: bytes, max_depth: int):
    """Yield every `Part` of the message `raw`; nested messages deeper than `max_depth` are
    yielded whole (undecoded, as `message/rfc822`) for the caller to judge."""
    yield from _walk(parse(raw), 1, max_depth)


def _walk(message: Message, depth: int, max_depth: int):
    if message.is_multipart():
        payload = message.get_payload()
        if not isinstance(payload, list):
            return
        for sub in payload:
            if not isinstance(sub, Message):
                continue
            if message.get_content_type() == "message/rfc822" or (
                    sub.get_content_maintype() == "multipart" or sub.is_multipart()):
                if depth >= max_depth:
                    try:
                        raw = sub.as_bytes()
                    except (ValueError, LookupError, TypeError):  # undecodable: nothing to see
                        continue
                    yield Part("", "message/rfc822", raw, depth + 1)
                    continue
                inner = depth + 1 if message.get_content_type() == "message/rfc822" else depth
                yield from _walk(sub, inner, max_depth)
            else:
                yield from _leaf(sub, depth)
    else:
        yield from _leaf(message, depth)


def _leaf(part: Message, depth: int):
    content_type = part.get_content_type()
    name = part.get_filename() or part.get_param("name") or ""
    if isinstance(name, tuple):  # RFC 2231 value
        name = email.utils.collapse_rfc2231_value(name)
    try:
        data = part.get_payload(decode=True)
    except (ValueError, binascii.Error, LookupError):
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    yield Part(str(name), content_type, data, depth)
    if part.get_content_maintype() == "text":
        for uu_name, uu_data in uudecode_blocks(data):
            yield Part(uu_name, "application/octet-stream", uu_data, depth)


def uudecode_blocks(text: bytes):
    """(name, bytes) for each uuencoded block in `text`."""
    if b"begin " not in text:
        return
    for m in _UU_BEGIN.finditer(text):
        out = bytearray()
        for line in text[m.end():].split(b"\n")[1:]:
            line = line.rstrip(b"\r")
            if line.strip() in (b"end", b""):
                break
            try:
                out += binascii.a2b_uu(line)
            except binascii.Error:
                # Some encoders drop trailing spaces; decode what the length byte says.
                try:
                    nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
                    out += binascii.a2b_uu(line[:nbytes + 1])
                except (binascii.Error, IndexError):
                    break
        yield m.group(1).decode("utf-8", "replace").strip(), bytes(out)
