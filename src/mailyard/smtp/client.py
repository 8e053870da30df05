"""The client side of SMTP (RFC 5321) and LMTP (RFC 2033), sans-I/O.

Theory of operation: a `ClientConnection` turns commands into bytes to send and the server's
bytes into `Answer`s, matching each reply to the command it answers through a FIFO of
expected replies — so commands may be pipelined (RFC 2920) and the answers still come back
labelled. It remembers what the session needs to know: the EHLO/LHLO extensions, the
recipients the server accepted (RCPT 2xx), and, in LMTP, expects one reply per accepted
recipient after the end of DATA (RFC 2033 §4.2), each labelled with its recipient.

API (every command method returns the bytes to write):

    client = ClientConnection(lmtp=False)
    client.receive_data(bytes)        # what the server sent
    client.next_answer()              # -> Answer(command, reply, recipient) or NEED_DATA
    client.hello(name)                # EHLO (or LHLO when lmtp); helo(name) for HELO
    client.starttls(); client.auth(mech, initial=None); client.auth_response(text)
    client.mail(sender, params={})    # params: {"SIZE": "123", "SMTPUTF8": None}
    client.rcpt(recipient, params={})
    client.data()                     # expect 354, then:
    client.send_content(chunk)        # dot-stuffed, line endings normalised to CRLF
    client.end_content()              # ".\r\n"; SMTP: one Answer("DATA-END"),
                                      # LMTP: one Answer per accepted recipient
    client.rset(); client.noop(); client.quit()
    client.extensions                 # {"SIZE": "1000", "PIPELINING": "", ...} after EHLO
    client.supports("PIPELINING")     # bool
    client.accepted_recipients        # addresses with a 2xx RCPT in this transaction
    client.pending                    # commands still awaiting a reply

The first answer is the server's greeting (command "GREETING"). A reply that cannot be parsed
raises `ProtocolError`; so does a reply with no command waiting for it, unless it is a 421
(which may come at any time, RFC 5321 §3.8).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from mailyard.smtp.address import xtext_encode  # noqa: F401  (re-exported for callers)
from mailyard.smtp.data import DataEncoder
from mailyard.smtp.events import NEED_DATA
from mailyard.smtp.replies import Reply

MAX_REPLY_LINE = 16384
MAX_REPLY_LINES = 1000
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)\Z", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |\Z)")


class ProtocolError(Exception):
    """The server sent something that is not an SMTP reply, or out of turn."""


@dataclass(frozen=True)
class Answer:
    """A server reply labelled with the command it answers (and its recipient, for RCPT and
    LMTP per-recipient DATA replies)."""

    command: str
    reply: Reply
    recipient: str | None = None

    @property
    def code(self) -> int:
        return self.reply.code

    @property
    def ok(self) -> bool:
        return self.reply.is_positive


class ClientConnection:
    """One client session's protocol state (SMTP or LMTP). See the module docstring."""

    def __init__(self, *, lmtp: bool = False):
        self.lmtp = lmtp
        self.extensions: dict[str, str] = {}
        self.accepted_recipients: list[str] = []
        self.closed = False
        self._buf = bytearray()
        self._lines: list[tuple[int, str]] = []
        self._expect: deque[tuple[str, str | None]] = deque([("GREETING", None)])
        self._encoder: DataEncoder | None = None

    @property
    def pending(self) -> list[str]:
        return [command for command, _ in self._expect]

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    # -- replies ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_answer(self) -> Answer | object:
        """The next complete reply as an `Answer`, or NEED_DATA."""
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > MAX_REPLY_LINE:
                    raise ProtocolError("reply line too long")
                return NEED_DATA
            raw = bytes(self._buf[:idx]).rstrip(b"\r")
            del self._buf[:idx + 1]
            match = _REPLY_LINE.match(raw)
            if not match:
                raise ProtocolError(f"not an SMTP reply: {raw[:80]!r}")
            code, sep, text = int(match.group(1)), match.group(2), match.group(3)
            if self._lines and self._lines[0][0] != code:
                raise ProtocolError("reply code changed inside a multi-line reply")
            if len(self._lines) >= MAX_REPLY_LINES:
                raise ProtocolError("too many reply lines")
            self._lines.append((code, text.decode("utf-8", "replace")))
            if sep == b"-":
                continue
            lines, self._lines = self._lines, []
            return self._answer(self._make_reply(code, [t for _, t in lines]))

    @staticmethod
    def _make_reply(code: int, texts: list[str]) -> Reply:
        enhanced = None
        match = _ENHANCED.match(texts[0])
        if match and match.group(1) == str(code)[0]:
            enhanced = f"{match.group(1)}.{match.group(2)}.{match.group(3)}"
            stripped = []
            for text in texts:
                if text.startswith(enhanced):
                    text = text[len(enhanced):].lstrip(" ")
                stripped.append(text)
            texts = stripped
        return Reply(code, enhanced, tuple(texts))

    def _answer(self, reply: Reply) -> Answer:
        if not self._expect:
            if reply.code == 421:
                self.closed = True
                return Answer("", reply)
            raise ProtocolError(f"unexpected reply: {reply}")
        command, recipient = self._expect.popleft()
        ok = reply.is_positive
        if reply.code == 421:
            self.closed = True
        if command in ("EHLO", "LHLO") and ok:
            self.extensions = {}
            for line in reply.lines[1:]:
                keyword, _, params = line.partition(" ")
                if keyword:
                    self.extensions[keyword.upper()] = params
        elif command == "RCPT" and ok:
            self.accepted_recipients.append(recipient or "")
        elif command == "STARTTLS" and reply.code == 220:
            self.extensions = {}      # RFC 3207 §4.2: forget, and EHLO again
            self._reset()
        elif command == "QUIT":
            self.closed = True
        elif command == "RSET" and ok or command == "DATA-END" and not self._expect_data_end():
            self._reset()
        elif command == "DATA" and reply.code != 354:
            self._encoder = None
        return Answer(command, reply, recipient)

    def _expect_data_end(self) -> bool:
        return any(c == "DATA-END" for c, _ in self._expect)

    def _reset(self) -> None:
        self.accepted_recipients = []
        self._encoder = None

    # -- commands --------------------------------------------------------------------------
    def _command(self, line: str, expect: str, recipient: str | None = None) -> bytes:
        if "\r" in line or "\n" in line:
            raise ValueError("a command cannot contain CR or LF")
        self._expect.append((expect, recipient))
        return line.encode("utf-8") + b"\r\n"

    def hello(self, name: str) -> bytes:
        return self._command(f"{'LHLO' if self.lmtp else 'EHLO'} {name}",
                             "LHLO" if self.lmtp else "EHLO")

    def helo(self, name: str) -> bytes:
        return self._command(f"HELO {name}", "HELO")

    def starttls(self) -> bytes:
        return self._command("STARTTLS", "STARTTLS")

    def auth(self, mechanism: str, initial: str | None = None) -> bytes:
        line = f"AUTH {mechanism}" + ("" if initial is None else f" {initial or '='}")
        return self._command(line, "AUTH")

    def auth_response(self, text: str) -> bytes:
        return self._command(text, "AUTH")

    @staticmethod
    def _params(params: dict[str, str | None] | None) -> str:
        if not params:
            return ""
        return "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params.items())

    def mail(self, sender: str, params: dict[str, str | None] | None = None) -> bytes:
        self._reset()
        return self._command(f"MAIL FROM:<{sender}>{self._params(params)}", "MAIL")

    def rcpt(self, recipient: str, params: dict[str, str | None] | None = None) -> bytes:
        return self._command(f"RCPT TO:<{recipient}>{self._params(params)}", "RCPT",
                             recipient)

    def data(self) -> bytes:
        self._encoder = DataEncoder()
        return self._command("DATA", "DATA")

    def send_content(self, chunk: bytes) -> bytes:
        if self._encoder is None:
            raise ValueError("send_content() before data()")
        return self._encoder.encode(chunk)

    def end_content(self) -> bytes:
        if self._encoder is None:
            raise ValueError("end_content() before data()")
        tail = self._encoder.end()
        self._encoder = None
        if self.lmtp:   # RFC 2033 §4.2: one reply per accepted recipient, in order
            for recipient in self.accepted_recipients:
                self._expect.append(("DATA-END", recipient))
        else:
            self._expect.append(("DATA-END", None))
        return tail

    def rset(self) -> bytes:
        return self._command("RSET", "RSET")

    def noop(self) -> bytes:
        return self._command("NOOP", "NOOP")

    def quit(self) -> bytes:
        return self._command("QUIT", "QUIT")
