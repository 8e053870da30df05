"""SPAMC/SPAMD protocol core (sans-I/O): requests in, response bytes out.

Theory of operation: one request per connection, as spamc speaks it. `SpamdRequestParser`
is fed bytes (`receive_data`) and, once the request line, the header block (terminated by an
empty line) and `Content-length` bytes of body have arrived, `next_request()` returns a
`SpamdRequest`; before that it returns `NEED_DATA`. Without `Content-length` (very old
clients) the body runs to end of input (`receive_eof`). A body sent with `Compress: zlib` is
inflated with a hard cap, so a compression bomb is refused, not expanded. Anything malformed
raises `SpamdProtocolError` carrying the EX_* status the server answers with.

The response side is plain functions: `format_check`, `format_symbols`, `format_report`,
`format_process`, `format_headers`, `format_tell`, `format_pong`, `format_error` — each
returns the complete response bytes for a verdict (`SPAMD/1.5 0 EX_OK`, `Spam: True ; 7.3 /
5.0`, `Content-length`, body).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from mailyard.spam.engine import SpamVerdict, fold, header_fields

PROTOCOL = "SPAMD/1.5"
MAX_HEADER_BLOCK = 64 * 1024
DEFAULT_MAX_BODY = 64 << 20

# Status codes (sysexits.h), as spamd answers them.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_TOOBIG = 98          # spamd's own: message larger than we accept
STATUS_NAMES = {EX_OK: "EX_OK", EX_USAGE: "EX_USAGE", EX_DATAERR: "EX_DATAERR",
                EX_NOUSER: "EX_NOUSER", EX_UNAVAILABLE: "EX_UNAVAILABLE",
                EX_SOFTWARE: "EX_SOFTWARE", EX_TEMPFAIL: "EX_TEMPFAIL",
                EX_PROTOCOL: "EX_PROTOCOL", EX_TOOBIG: "EX_TOOBIG"}

VERBS_WITH_BODY = {"CHECK", "SYMBOLS", "REPORT", "REPORT_IFSPAM", "PROCESS", "HEADERS", "TELL"}
VERBS = VERBS_WITH_BODY | {"PING", "SKIP"}
_REQUEST_LINE = re.compile(rb"^([A-Z_]{1,20}) SPAMC/(\d{1,2})\.(\d{1,2})$")

NEED_DATA = object()


class SpamdProtocolError(Exception):
    """A request we refuse; `status` is the EX_* code for the response line."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SpamdRequest:
    """One parsed request: verb, protocol version, headers (lower-cased names), body."""

    verb: str
    version: tuple[int, int]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def user(self) -> str | None:
        return self.headers.get("user") or None

    @property
    def compressed(self) -> bool:
        return self.headers.get("compress", "").lower() == "zlib"


class SpamdRequestParser:
    """Accumulates one request (see the module docstring)."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY):
        self.max_body = max_body
        self._buf = bytearray()
        self._head: tuple[str, tuple[int, int], dict[str, str]] | None = None
        self._length: int | None = None
        self._eof = False
        self._done = False

    def receive_data(self, data: bytes) -> None:
        self._buf += data
        if self._head is None and len(self._buf) > MAX_HEADER_BLOCK and \
                b"\n\n" not in self._buf and b"\r\n\r\n" not in self._buf:
            raise SpamdProtocolError(EX_PROTOCOL, "header block too long")
        if self._length is not None and len(self._buf) > self._length + 2:
            pass  # extra bytes after the body are ignored, as spamd does
        elif self._length is None and self._head is not None and len(self._buf) > self.max_body:
            raise SpamdProtocolError(EX_TOOBIG, "message too large")

    def receive_eof(self) -> None:
        self._eof = True

    def next_request(self):
        if self._done:
            return NEED_DATA
        if self._head is None:
            if not self._parse_head():
                if self._eof:
                    if not self._buf.strip():
                        raise SpamdProtocolError(EX_PROTOCOL, "no request")
                    # a header block cut short: PING/SKIP may come without the empty line
                    self._buf += b"\r\n\r\n"
                    if not self._parse_head():
                        raise SpamdProtocolError(EX_PROTOCOL, "incomplete request")
                else:
                    return NEED_DATA
        verb, version, headers = self._head
        if verb not in VERBS_WITH_BODY:
            self._done = True
            return SpamdRequest(verb, version, headers, b"")
        if self._length is None:
            if not self._eof:
                return NEED_DATA
            body = bytes(self._buf)
        else:
            if len(self._buf) < self._length:
                if self._eof:
                    raise SpamdProtocolError(EX_PROTOCOL, "body shorter than Content-length")
                return NEED_DATA
            body = bytes(self._buf[:self._length])
        self._done = True
        if headers.get("compress"):
            if headers["compress"].lower() != "zlib":
                raise SpamdProtocolError(EX_PROTOCOL, "unsupported compression")
            body = inflate(body, self.max_body)
        return SpamdRequest(verb, version, headers, body)

    def _parse_head(self) -> bool:
        buf = bytes(self._buf)
        idx = buf.find(b"\r\n\r\n")
        sep = 4
        lf = buf.find(b"\n\n")
        if lf != -1 and (idx == -1 or lf < idx):
            idx, sep = lf, 2
        if idx == -1:
            # PING and SKIP have no headers; spamc sends just the line and \r\n
            first, nl, _ = buf.partition(b"\n")
            if nl and first.rstrip(b"\r").split(b" ")[0] in (b"PING", b"SKIP"):
                idx, sep = len(first), 1
            else:
                return False
        lines = buf[:idx].replace(b"\r\n", b"\n").split(b"\n")
        m = _REQUEST_LINE.match(lines[0].strip())
        if not m:
            raise SpamdProtocolError(EX_PROTOCOL, "bad request line")
        verb = m.group(1).decode()
        if verb not in VERBS:
            raise SpamdProtocolError(EX_PROTOCOL, f"unknown verb {verb}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line.strip():
                continue
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise SpamdProtocolError(EX_PROTOCOL, "bad header line")
            headers[name.strip().decode("latin-1").lower()] = \
                value.strip().decode("utf-8", "replace")
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise SpamdProtocolError(EX_PROTOCOL, "bad Content-length") from None
            if length < 0:
                raise SpamdProtocolError(EX_PROTOCOL, "bad Content-length")
            if length > self.max_body:
                raise SpamdProtocolError(EX_TOOBIG, "message too large")
            self._length = length
        self._head = (verb, (int(m.group(2)), int(m.group(3))), headers)
        del self._buf[:idx + sep]
        return True


def inflate(data: bytes, limit: int) -> bytes:
    """zlib-inflate at most `limit` bytes; more (a bomb) or garbage is a protocol error."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error:
        raise SpamdProtocolError(EX_PROTOCOL, "bad zlib data") from None
    if len(out) > limit or d.unconsumed_tail:
        raise SpamdProtocolError(EX_TOOBIG, "inflated message too large")
    return out


# -- responses -------------------------------------------------------------------------------
def _response(status: int, headers: list[tuple[str, str]], body: bytes = b"",
              message: str | None = None, compress: bool = False) -> bytes:
    if compress and body:
        body = zlib.compress(body)
        headers = headers + [("Compress", "zlib")]
    head = [f"{PROTOCOL} {status} {message or STATUS_NAMES.get(status, 'EX_SOFTWARE')}"]
    head += [f"{n}: {v}" for n, v in headers]
    head.append(f"Content-length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + body


def _spam_header(verdict: SpamVerdict) -> tuple[str, str]:
    return ("Spam", f"{'True' if verdict.is_spam else 'False'} ; {verdict.score:.1f} / "
                    f"{verdict.required:.1f}")


def format_pong() -> bytes:
    return f"{PROTOCOL} {EX_OK} PONG\r\n".encode()


def format_error(status: int, reason: str = "") -> bytes:
    name = STATUS_NAMES.get(status, "EX_SOFTWARE")
    return f"{PROTOCOL} {status} {name}{(' ' + reason) if reason else ''}\r\n\r\n".encode()


def format_check(verdict: SpamVerdict) -> bytes:
    return _response(EX_OK, [_spam_header(verdict)])


def format_symbols(verdict: SpamVerdict, compress: bool = False) -> bytes:
    return _response(EX_OK, [_spam_header(verdict)], ",".join(verdict.rule_names).encode(),
                     compress=compress)


def report_text(verdict: SpamVerdict, hostname: str) -> str:
    """The human-readable analysis (REPORT), in mailyard's words."""
    lines = [f'The mailyard spam filter on "{hostname}" '
             f"{'judged this message to be spam' if verdict.is_spam else 'checked this message'}.",
             "",
             f"Content analysis details:   ({verdict.score:.1f} points, "
             f"{verdict.required:.1f} required)",
             "",
             " pts rule name              description",
             "---- ---------------------- --------------------------------------------------"]
    for hit in verdict.hits:
        pts = f"{hit.score:4.1f}" if abs(hit.score) < 100 else f"{hit.score:4.0f}"
        lines.append(f"{pts} {hit.name:<22} {hit.description}")
    return "\n".join(lines) + "\n"


def format_report(verdict: SpamVerdict, hostname: str, only_if_spam: bool = False,
                  compress: bool = False) -> bytes:
    body = b"" if only_if_spam and not verdict.is_spam else \
        report_text(verdict, hostname).encode("utf-8")
    return _response(EX_OK, [_spam_header(verdict)], body, compress=compress)


def added_header_block(verdict: SpamVerdict, hostname: str, version: str, eol: bytes) -> bytes:
    fields = [("X-Spam-Checker-Version", f"mailyard {version} on {hostname}")]
    fields += header_fields(verdict)
    return b"".join(fold(n, v).replace("\n", eol.decode()).encode("utf-8") + eol
                    for n, v in fields)


def rewrite_message(message: bytes, verdict: SpamVerdict, hostname: str, version: str) -> bytes:
    """The message with any X-Spam-* fields replaced by ours, at the end of the header."""
    eol = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
    end = message.find(eol + eol)
    if end == -1:
        head, body = message, b""
    else:
        head, body = message[:end + len(eol)], message[end + len(eol):]
    kept: list[bytes] = []
    skipping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"x-spam-")
        if not skipping:
            kept.append(line)
    new_head = b"".join(kept)
    if new_head and not new_head.endswith(b"\n"):
        new_head += eol
    new_head += added_header_block(verdict, hostname, version, eol)
    if end == -1:
        return new_head + eol
    return new_head + body


def format_process(message: bytes, verdict: SpamVerdict, hostname: str, version: str,
                   compress: bool = False) -> bytes:
    return _response(EX_OK, [_spam_header(verdict)],
                     rewrite_message(message, verdict, hostname, version), compress=compress)


def format_headers(message: bytes, verdict: SpamVerdict, hostname: str, version: str,
                   compress: bool = False) -> bytes:
    rewritten = rewrite_message(message, verdict, hostname, version)
    eol = b"\r\n" if b"\r\n" in rewritten[:4096] else b"\n"
    end = rewritten.find(eol + eol)
    head = rewritten if end == -1 else rewritten[:end + 2 * len(eol)]
    return _response(EX_OK, [_spam_header(verdict)], head, compress=compress)


def format_tell(did_set: list[str], did_remove: list[str]) -> bytes:
    headers = []
    if did_set:
        headers.append(("DidSet", ",".join(did_set)))
    if did_remove:
        headers.append(("DidRemove", ",".join(did_remove)))
    return _response(EX_OK, headers)
