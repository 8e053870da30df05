"""The message as a Sieve script sees it: header fields (editable), addresses, body parts.

The header is split from the raw bytes once (tolerant of LF-only line ends, missing body,
8-bit junk); the body's MIME structure is parsed lazily, once, with the `email` package,
only when a `body` test needs it. Header values are unfolded and RFC 2047-decoded for tests
(RFC 5228 §2.7.2). `editheader` changes the field list; `to_bytes()` renders the edited
message with the original body bytes untouched.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import html
import re
from email.message import Message


def _decode_2047(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
        out = []
        for chunk, charset in parts:
            if isinstance(chunk, bytes):
                try:
                    out.append(chunk.decode(charset or "ascii", "replace"))
                except LookupError:
                    out.append(chunk.decode("latin-1"))
            else:
                out.append(chunk)
        return "".join(out)
    except Exception:  # noqa: BLE001 — broken encoded words: keep the raw text
        return value


class SieveMessage:
    """Header fields as [name, raw value] pairs plus the untouched body bytes."""

    def __init__(self, raw: bytes):
        self.raw = raw
        head, sep, body = self._split(raw)
        self.body_bytes = body
        self.separator = sep
        self.fields: list[tuple[str, str]] = []
        self.edited = False
        self._mime: Message | None = None
        self._values: dict[str, list[str]] = {}     # decoded values per lower-cased name
        self._addresses: dict[str, list[list[str]]] = {}
        current: list[str] | None = None
        for line in head.split(b"\n"):
            text = line.rstrip(b"\r").decode("utf-8", "surrogateescape")
            if text[:1] in (" ", "\t") and current is not None:
                current[1] += "\r\n" + text
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip() or " " in name:
                current = None  # not a header line (junk): ignore it
                continue
            current = [name, value]
            self.fields.append(current)
        self.fields = [(n, v) for n, v in self.fields]

    @staticmethod
    def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
        for sep in (b"\r\n\r\n", b"\n\n"):
            idx = raw.find(sep)
            if idx >= 0:
                other = b"\n\n" if sep == b"\r\n\r\n" else b"\r\n\r\n"
                oidx = raw.find(other)
                if oidx >= 0 and oidx < idx:
                    idx, sep = oidx, other
                return raw[:idx], sep, raw[idx + len(sep):]
        return raw, b"", b""

    @property
    def size(self) -> int:
        return len(self.to_bytes()) if self.edited else len(self.raw)

    # -- header access -------------------------------------------------------------------
    def header_values(self, name: str) -> list[str]:
        """Decoded, unfolded values of every field called `name` (case-insensitive)."""
        lname = name.lower()
        cached = self._values.get(lname)
        if cached is None:
            cached = [self.decoded(v) for n, v in self.fields if n.lower() == lname]
            self._values[lname] = cached
        return list(cached)

    @staticmethod
    def decoded(value: str) -> str:
        unfolded = value.replace("\r\n", "").replace("\n", "").strip(" \t")
        return _decode_2047(unfolded)

    def has_header(self, name: str) -> bool:
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self.fields)

    def addresses(self, name: str) -> list[list[str]]:
        """Per field called `name`, the addr-specs it holds (groups flattened)."""
        lname = name.lower()
        if lname in self._addresses:
            return self._addresses[lname]
        out = []
        for value in self.header_values(name):
            try:
                pairs = email.utils.getaddresses([value])
            except Exception:  # noqa: BLE001 — the email package on hostile input
                pairs = []
            addrs = [addr for _, addr in pairs if addr]
            if not addrs and value.strip():
                addrs = [value.strip()]
            out.append(addrs)
        self._addresses[lname] = out
        return out

    # -- editheader (RFC 5293) -----------------------------------------------------------
    def add_header(self, name: str, value: str, last: bool) -> None:
        encoded = _encode_header_value(value)
        if last:
            self.fields.append((name, " " + encoded))
        else:
            self.fields.insert(0, (name, " " + encoded))
        self._changed()

    def _changed(self) -> None:
        self.edited = True
        self._mime = None
        self._values.clear()
        self._addresses.clear()

    def delete_header(self, name: str, keep) -> int:
        """Delete fields named `name` for which `keep(index, decoded_value)` is False."""
        lname = name.lower()
        out, index, removed = [], 0, 0
        count = sum(1 for n, _ in self.fields if n.lower() == lname)
        for n, v in self.fields:
            if n.lower() == lname:
                index += 1
                if not keep(index, count, self.decoded(v)):
                    removed += 1
                    continue
            out.append((n, v))
        if removed:
            self.fields = out
            self._changed()
        return removed

    def to_bytes(self) -> bytes:
        if not self.edited:
            return self.raw
        lines = [f"{n}:{v}".encode("utf-8", "surrogateescape") for n, v in self.fields]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body_bytes

    # -- MIME for the body test ----------------------------------------------------------
    @property
    def mime(self) -> Message:
        if self._mime is None:
            try:
                self._mime = email.message_from_bytes(self.to_bytes(),
                                                      policy=email.policy.compat32)
            except Exception:  # noqa: BLE001 — the email package on hostile input
                self._mime = email.message_from_bytes(b"\r\n" + self.body_bytes,
                                                      policy=email.policy.compat32)
        return self._mime


def _encode_header_value(value: str) -> str:
    """Header text as the message carries it: RFC 2047 for non-ASCII, folded long lines."""
    value = value.replace("\r", " ").replace("\n", " ")
    if not value.isascii():
        return email.header.Header(value, "utf-8").encode()
    return value


def part_text(part: Message) -> str:
    """The decoded text of one leaf part (transfer encoding and charset undone)."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 — the email package on hostile input
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except (LookupError, UnicodeError):
        return payload.decode("latin-1")


_HTML_DROP = re.compile(r"<!--.*?-->|<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """RFC 5173 §5.2 `:text` of an HTML part: markup removed (each tag becomes a space,
    as Dovecot does), scripts, styles and comments dropped, entities decoded."""
    return html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", markup)))
