"""DATA content transparency (RFC 5321 §4.5.2), both directions, streaming.

Theory of operation: the decoder walks the raw bytes after a 354 with a tiny state machine
that needs no more than two bytes of look-behind, so it hands out content as it arrives and
never holds a whole message. Only `<CR><LF>.<CR><LF>` ends the content; a line that begins
with "." loses that dot. A CR not followed by LF, or an LF not preceded by CR ("bare"
newlines), never counts as a line end for the terminator or for dot-removal decisions, which
is what closes the SMTP smuggling hole (CVE-2023-51764 class: `<LF>.<LF>`, `<CR>.<CR>`,
`<LF>.<CR><LF>` ending DATA early in one server and not in the next). Policy for bare
newlines is one of:
  - "reject": remember the defect; the content is refused at its real end
    (`replies.BARE_NEWLINE_DATA`);
  - "normalize": turn each bare CR or LF into CRLF in the output. A "." right after such a
    normalised newline is removed like a stuffed dot, but it can never end the content.

The encoder does the reverse for a client: it normalises every line ending to CRLF and adds
a dot to each line that begins with one, so whatever the content, the peer sees it whole.
"""

from __future__ import annotations

import re

CR, LF, DOT = 13, 10, 46

_NEWLINE_BYTE = re.compile(rb"[\r\n]")
_ANY_NEWLINE = re.compile(rb"\r\n|\r|\n")

BARE_REJECT = "reject"
BARE_NORMALIZE = "normalize"


class DataDecoder:
    """Feed raw DATA bytes with `feed(data) -> (content, done, rest)`.

    `content` is the unstuffed content found so far, `done` says the terminator was seen
    and `rest` is what came after it (the next pipelined command). `bare_newline` is True once
    a bare CR or LF was seen. Content keeps its final CRLF (the one before the ".").
    """

    def __init__(self, bare_newlines: str = BARE_REJECT):
        if bare_newlines not in (BARE_REJECT, BARE_NORMALIZE):
            raise ValueError(f"bare_newlines must be reject or normalize: {bare_newlines!r}")
        self.normalize = bare_newlines == BARE_NORMALIZE
        self.bare_newline = False
        # "bol": just after a real CRLF (or the 354); "soft": after a normalised bare newline;
        # "mid": inside a line.
        self._state = "bol"
        self._held = b""      # up to 2 undecided bytes (".", ".\r", or "\r")

    def feed(self, data: bytes) -> tuple[bytes, bool, bytes]:
        buf = self._held + data
        self._held = b""
        # Fast path, the common case: no line in this piece starts with a dot, every line
        # ending is CRLF, and the piece does not end inside a CRLF. Then the content is the
        # piece itself (C-speed scans instead of a walk line by line).
        if (buf and b"\r\n." not in buf and not buf.endswith(b"\r")
                and (self._state == "mid" or buf[:1] != b".")):
            crlf = buf.count(b"\r\n")
            if buf.count(b"\r") == crlf and buf.count(b"\n") == crlf:
                self._state = "bol" if buf.endswith(b"\r\n") else "mid"
                return buf, False, b""
        fast = self._feed_crlf_only(buf)
        if fast is not None:
            return fast
        out = bytearray()
        i, n = 0, len(buf)
        while i < n:
            state = self._state
            if state in ("bol", "soft") and buf[i] == DOT:
                # Need up to 3 bytes: ".\r\n" is the terminator only at a real line start.
                if state == "bol":
                    if n - i < 3 and buf[i:] == b".\r\n"[:n - i]:
                        self._held = buf[i:]
                        return bytes(out), False, b""
                    if buf[i:i + 3] == b".\r\n":
                        return bytes(out), True, buf[i + 3:]
                # A stuffed dot (RFC 5321 §4.5.2): drop it, the rest is line content.
                i += 1
                self._state = "mid"
                continue
            # Copy up to the next CR or LF.
            match = _NEWLINE_BYTE.search(buf, i)
            j = match.start() if match else n
            if j > i:
                out += buf[i:j]
                self._state = "mid"
                i = j
                continue
            if buf[i] == CR:
                if i + 1 >= n:
                    self._held = buf[i:]
                    return bytes(out), False, b""
                if buf[i + 1] == LF:
                    out += b"\r\n"
                    self._state = "bol"
                    i += 2
                    continue
            # A bare CR or a bare LF.
            self.bare_newline = True
            if self.normalize:
                out += b"\r\n"
                self._state = "soft"
            else:
                out.append(buf[i])
                self._state = "mid"
            i += 1
        return bytes(out), False, b""

    def _feed_crlf_only(self, buf: bytes) -> tuple[bytes, bool, bytes] | None:
        """The second fast path: a piece whose every line ending is CRLF, possibly with
        stuffed dots and the terminator (a whole small message usually arrives so). None
        when the walk below must decide (bare CR/LF anywhere, a piece that ends where a
        terminator might begin, or the state after a normalised bare newline)."""
        state = self._state
        if not buf or state == "soft" or buf.endswith(b"\r"):
            return None
        crlf = buf.count(b"\r\n")
        if buf.count(b"\r") != crlf or buf.count(b"\n") != crlf:
            return None
        if state == "bol" and buf.startswith(b".\r\n"):
            return b"", True, buf[3:]
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            content, rest = buf[:end + 2], buf[end + 5:]
        elif buf.endswith(b"\r\n.") or (state == "bol" and buf == b"."):
            return None                      # maybe the start of the terminator
        else:
            content, rest = buf, b""
        # Each line that starts with a dot loses it (RFC 5321 §4.5.2); the first line only
        # when the piece starts a line.
        if state == "bol" and content[:1] == b".":
            content = content[1:]
        content = content.replace(b"\r\n.", b"\r\n")
        if end >= 0:
            self._state = "bol"
            return content, True, rest
        self._state = "bol" if buf.endswith(b"\r\n") else "mid"
        return content, False, b""


class DataEncoder:
    """Dot-stuff content for sending, streaming: `encode(chunk) -> bytes`, `end() -> bytes`.

    Line endings are normalised to CRLF (bare CR and bare LF become CRLF), every line that
    starts with "." gets one more, and `end()` closes with `.\r\n` after a final CRLF (added
    when the content does not end with one).
    """

    def __init__(self) -> None:
        self._bol = True
        self._pending_cr = False

    def encode(self, chunk: bytes) -> bytes:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # Undecided: CRLF split across chunks, or a bare CR.
            chunk = chunk[:-1]
            self._pending_cr = True
        if not chunk:
            return b""
        crlf = chunk.count(b"\r\n")
        if chunk.count(b"\r") != crlf or chunk.count(b"\n") != crlf:
            chunk = _ANY_NEWLINE.sub(b"\r\n", chunk)    # only when there is a bare one
        stuffed = chunk.replace(b"\r\n.", b"\r\n..")
        if self._bol and stuffed[:1] == b".":
            stuffed = b"." + stuffed
        self._bol = stuffed.endswith(b"\r\n")
        return stuffed

    def end(self) -> bytes:
        if self._pending_cr:
            self._pending_cr = False
            return b"\r\n.\r\n"
        if self._bol:
            return b".\r\n"
        return b"\r\n.\r\n"


def dot_stuff(content: bytes) -> bytes:
    """The whole content dot-stuffed and terminated, ready to send after a 354."""
    enc = DataEncoder()
    return enc.encode(content) + enc.end()
