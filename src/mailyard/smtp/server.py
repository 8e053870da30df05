"""The server side of SMTP (RFC 5321) and LMTP (RFC 2033), sans-I/O.

Theory of operation: a `ServerConnection` is fed the bytes a client sends
(`receive_data`) and hands back one typed event at a time (`next_event`): a command (`Ehlo`,
`Mail`, `Rcpt`, `Data`, ...), a piece of message content (`DataChunk`), the end of the
content (`DataEnd`), a refused line (`CommandError`), or `NEED_DATA` when the buffer holds
no complete line. Every event except `DataChunk` is answered by the server with `reply(code,
enhanced, text) -> bytes`; until then `next_event` returns `PAUSED`, so pipelined commands
(RFC 2920) are processed strictly in order and each one is parsed in the state that the
previous reply left. The codec owns syntax, sequencing (503), line length, SMTPUTF8 address
rules and DATA transparency; the server owns every policy decision, and the codec learns the
outcome from the reply code (250 to MAIL opens a transaction, 354 to DATA switches to content,
220 to STARTTLS forgets the session, 334 to AUTH reads the next line as a SASL response).

States: "greeting" (no HELO yet) → "ready" (HELO/EHLO/LHLO done) → "mail" (sender
accepted) → "rcpt" (at least one recipient accepted) → "data" (reading content) → back to
"ready"; "auth" during a SASL exchange; "closed" after QUIT or a 421.

LMTP (`lmtp=True`): LHLO replaces HELO/EHLO (RFC 2033 §4.1), and the end of DATA takes one
reply per accepted recipient, in RCPT order (RFC 2033 §4.2); `recipients` lists them.

Security: bare CR / bare LF never terminate anything (see `mailyard.smtp.data`); commands
must end with CRLF unless `bare_newlines="normalize"`; on the 220 to STARTTLS everything
already buffered is discarded (RFC 3207 §4.2, CVE-2011-0411).
"""

from __future__ import annotations

from collections import deque

from mailyard.smtp import replies
from mailyard.smtp.address import (
    MAIL_PARAMS,
    RCPT_PARAMS,
    AddressError,
    Path,
    check_mail_params,
    check_rcpt_params,
    parse_params,
    parse_path,
    split_path_and_params,
)
from mailyard.smtp.data import BARE_NORMALIZE, BARE_REJECT, DataDecoder
from mailyard.smtp.events import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from mailyard.smtp.replies import Reply, format_reply

# RFC 5321 §4.5.3.1.4 says 512 octets for a command line; RFC 4954 §4 lets AUTH lines reach
# 12288, and SMTPUTF8 addresses are longer in octets, so the default is generous.
DEFAULT_MAX_LINE = 16384

_NOT_IMPLEMENTED_VERBS = frozenset({"BDAT", "TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML",
                                    "VERB", "XCLIENT", "XFORWARD"})


class ServerConnection:
    """One client session's protocol state (SMTP or LMTP). See the module docstring."""

    def __init__(self, *, lmtp: bool = False, bare_newlines: str = BARE_REJECT,
                 max_line_length: int = DEFAULT_MAX_LINE,
                 max_message_size: int | None = None,
                 mail_params: frozenset[str] = MAIL_PARAMS,
                 rcpt_params: frozenset[str] = RCPT_PARAMS,
                 tls: bool = False, enhanced_status_codes: bool = True):
        if bare_newlines not in (BARE_REJECT, BARE_NORMALIZE):
            raise ValueError("bare_newlines must be 'reject' or 'normalize'")
        self.lmtp = lmtp
        self.bare_newlines = bare_newlines
        self.max_line_length = max_line_length
        self.max_message_size = max_message_size
        self.mail_params = mail_params
        self.rcpt_params = rcpt_params
        self.enhanced_status_codes = enhanced_status_codes
        self.tls = tls
        self.state = "greeting"
        self.hello: str | None = None           # the HELO/EHLO/LHLO argument
        self.extended = False                   # EHLO/LHLO (not HELO) was used
        self.authenticated = False
        self.sender: Path | None = None
        self.mail_params_given: dict[str, str | None] = {}
        self.recipients: list[Path] = []         # accepted RCPTs of this transaction
        self.smtputf8 = False
        self._buf = bytearray()
        self._pending: Event | None = None
        self._lmtp_remaining = 0
        self._queued: deque[Event] = deque()
        self._skipping_long_line = False
        self._auth_return_state = "ready"
        self._decoder: DataDecoder | None = None
        self._data_size = 0
        self._data_error: Reply | None = None

    # -- input -----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Append bytes received from the client (b"" at EOF is accepted and ignored)."""
        if self.state != "closed":
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf)

    @property
    def awaiting_reply(self) -> Event | None:
        return self._pending

    def next_event(self) -> Event | object:
        """The next event, `NEED_DATA`, or `PAUSED` while an event awaits its reply."""
        if self._pending is not None:
            return PAUSED
        if self._queued:
            return self._take(self._queued.popleft())
        if self.state == "closed":
            return NEED_DATA
        if self.state == "data":
            return self._next_data_event()
        while True:
            line = self._next_line()
            if line is None:
                return NEED_DATA
            if isinstance(line, Event):
                return self._take(line)
            return self._take(self._parse_line(line))

    def _take(self, event: Event) -> Event:
        if event.expects_reply:
            self._pending = event
            if isinstance(event, DataEnd) and self.lmtp:
                self._lmtp_remaining = len(self.recipients)
        return event

    # -- DATA ------------------------------------------------------------------------------
    def _next_data_event(self) -> Event | object:
        assert self._decoder is not None
        if not self._buf:
            return NEED_DATA
        content, done, rest = self._decoder.feed(bytes(self._buf))
        self._buf.clear()
        if done:
            self._buf += rest
        self._data_size += len(content)
        if self._data_error is None:
            if self.max_message_size is not None and self._data_size > self.max_message_size:
                self._data_error = replies.MESSAGE_TOO_BIG   # RFC 1870 §6.3
            elif self._decoder.bare_newline and self.bare_newlines == BARE_REJECT:
                self._data_error = replies.BARE_NEWLINE_DATA
        chunk = content if content and self._data_error is None else b""
        if done:
            end = DataEnd(self._data_size, self._data_error)
            if chunk:
                self._queued.append(end)
                return DataChunk(chunk)
            return self._take(end)
        if chunk:
            return DataChunk(chunk)
        return NEED_DATA

    # -- command lines ---------------------------------------------------------------------
    def _next_line(self) -> str | Event | None:
        """One command line as text, a CommandError for a bad line, or None for more data."""
        while True:
            idx = self._buf.find(b"\n")
            if idx < 0:
                if len(self._buf) > self.max_line_length:
                    self._buf.clear()
                    if not self._skipping_long_line:
                        self._skipping_long_line = True
                        return CommandError(replies.LINE_TOO_LONG)
                return None
            raw = bytes(self._buf[:idx + 1])
            del self._buf[:idx + 1]
            if self._skipping_long_line:     # the tail of a line already refused
                self._skipping_long_line = False
                continue
            if len(raw) > self.max_line_length:
                return CommandError(replies.LINE_TOO_LONG)
            if raw.endswith(b"\r\n"):
                body = raw[:-2]
            elif self.bare_newlines == BARE_NORMALIZE:
                body = raw[:-1]
            else:   # RFC 5321 §2.3.8: lines end with CRLF
                return CommandError(replies.BARE_NEWLINE_COMMAND)
            if b"\r" in body or b"\n" in body:
                return CommandError(replies.BARE_NEWLINE_COMMAND)
            if b"\x00" in body:
                return CommandError(replies.SYNTAX_ERROR.with_text("NUL byte in command"))
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError:
                return CommandError(replies.SYNTAX_ERROR.with_text("Invalid UTF-8"))

    def _parse_line(self, line: str) -> Event:
        if self.state == "auth":   # RFC 4954 §4: a SASL response line, or "*" to cancel
            return AuthResponse(line.strip(), cancelled=line.strip() == "*")
        verb, _, arg = line.partition(" ")
        verb = verb.upper()
        arg = arg.strip(" ")
        handler = _HANDLERS.get(verb)
        if handler is None:
            if verb in _NOT_IMPLEMENTED_VERBS:
                return CommandError(replies.NOT_IMPLEMENTED, verb)
            return CommandError(replies.SYNTAX_ERROR, verb)
        return handler(self, verb, arg)

    def _hello(self, verb: str, arg: str) -> Event:
        if self.lmtp != (verb == "LHLO"):
            # RFC 2033 §4.1: LMTP has LHLO only; SMTP has no LHLO.
            return CommandError(replies.SYNTAX_ERROR, verb)
        if not arg or " " in arg:
            return CommandError(replies.PARAM_SYNTAX.with_text(f"Syntax: {verb} hostname"),
                                verb)
        return {"HELO": Helo, "EHLO": Ehlo, "LHLO": Lhlo}[verb](arg)

    def _mail(self, verb: str, arg: str) -> Event:
        if self.state == "greeting":
            return CommandError(replies.NEED_HELO, verb)
        if self.state in ("mail", "rcpt"):
            return CommandError(replies.NESTED_MAIL, verb)
        if arg[:5].upper() != "FROM:":
            return CommandError(replies.PARAM_SYNTAX.with_text("Syntax: MAIL FROM:<address>"),
                                verb)
        try:
            path_text, param_text = split_path_and_params(arg[5:].lstrip(" "))
            params = parse_params(param_text, utf8=True)
            check_mail_params(params, self.mail_params)
            utf8 = "SMTPUTF8" in params
            if not utf8 and not path_text.isascii():
                return CommandError(replies.NON_ASCII_ADDRESS, verb)   # RFC 6531 §3.4
            path = parse_path(path_text, utf8=utf8, null_ok=True)
        except AddressError as exc:
            return CommandError(exc.reply, verb)
        if (self.max_message_size is not None and params.get("SIZE")
                and int(params["SIZE"]) > self.max_message_size):
            return CommandError(replies.MESSAGE_TOO_BIG, verb)       # RFC 1870 §6.2
        return Mail(path, params)

    def _rcpt(self, verb: str, arg: str) -> Event:
        if self.state in ("greeting", "ready"):
            return CommandError(replies.NEED_MAIL, verb)
        if arg[:3].upper() != "TO:":
            return CommandError(replies.PARAM_SYNTAX.with_text("Syntax: RCPT TO:<address>"),
                                verb)
        try:
            path_text, param_text = split_path_and_params(arg[3:].lstrip(" "))
            params = parse_params(param_text, utf8=self.smtputf8)
            check_rcpt_params(params, self.rcpt_params)
            if not self.smtputf8 and not path_text.isascii():
                return CommandError(replies.NON_ASCII_ADDRESS, verb)
            path = parse_path(path_text, utf8=self.smtputf8, postmaster_ok=True)
        except AddressError as exc:
            return CommandError(exc.reply, verb)
        return Rcpt(path, params)

    def _data(self, verb: str, arg: str) -> Event:
        if arg:
            return CommandError(replies.PARAM_SYNTAX.with_text("Syntax: DATA"), verb)
        if self.state in ("greeting", "ready"):
            return CommandError(replies.NEED_MAIL, verb)
        if self.state == "mail":   # RFC 5321 §3.3 / RFC 2920 §3.1: all RCPTs refused
            return CommandError(replies.NO_VALID_RECIPIENTS, verb)
        return Data()

    def _simple(self, verb: str, arg: str) -> Event:
        if verb == "NOOP":
            return Noop()
        if arg:
            return CommandError(replies.PARAM_SYNTAX.with_text(f"Syntax: {verb}"), verb)
        if verb == "RSET":
            return Rset()
        return Quit()

    def _starttls(self, verb: str, arg: str) -> Event:
        if arg:
            return CommandError(replies.PARAM_SYNTAX.with_text("Syntax: STARTTLS"), verb)
        if self.tls:
            return CommandError(replies.ALREADY_TLS, verb)
        if self.state in ("mail", "rcpt"):
            return CommandError(replies.BAD_SEQUENCE, verb)
        return StartTls()

    def _auth(self, verb: str, arg: str) -> Event:
        if self.state == "greeting" or not self.extended:
            return CommandError(replies.NEED_HELO.with_text("Error: send EHLO first"), verb)
        if self.state in ("mail", "rcpt"):      # RFC 4954 §4: not during a transaction
            return CommandError(replies.BAD_SEQUENCE, verb)
        if self.authenticated:                  # RFC 4954 §4: once per session
            return CommandError(replies.ALREADY_AUTHENTICATED, verb)
        parts = arg.split(" ")
        if not parts[0] or len(parts) > 2:
            return CommandError(replies.PARAM_SYNTAX.with_text("Syntax: AUTH mechanism "
                                                               "[initial-response]"), verb)
        initial = None
        if len(parts) == 2:
            initial = "" if parts[1] == "=" else parts[1]
        return Auth(parts[0].upper(), initial)

    def _vrfy(self, verb: str, arg: str) -> Event:
        if not arg:
            return CommandError(replies.PARAM_SYNTAX.with_text(f"Syntax: {verb} address"),
                                verb)
        return Vrfy(arg) if verb == "VRFY" else Expn(arg)

    def _help(self, verb: str, arg: str) -> Event:
        return Help(arg)

    # -- output ----------------------------------------------------------------------------
    def reply(self, code: int, enhanced: str | None = None,
              text: str | tuple[str, ...] | list[str] = "") -> bytes:
        """Answer the pending event (or send an unsolicited greeting / 421); return bytes."""
        if not self.enhanced_status_codes:
            enhanced = None
        data = format_reply(code, enhanced, text)
        event = self._pending
        if event is not None:
            if isinstance(event, DataEnd) and self.lmtp:
                self._lmtp_remaining -= 1
                if self._lmtp_remaining <= 0:
                    self._pending = None
                    self._reset_transaction()
            else:
                self._pending = None
                self._transition(event, code)
        if code == 421:           # RFC 5321 §3.8: the server closes after a 421
            self._close()
        return data

    def respond(self, reply: Reply) -> bytes:
        """`reply()` from a `Reply` record (e.g. a named constant)."""
        return self.reply(reply.code, reply.enhanced, reply.text)

    def _transition(self, event: Event, code: int) -> None:
        ok = 200 <= code < 300
        if isinstance(event, (Helo, Ehlo, Lhlo)):
            if ok:   # RFC 5321 §4.1.4: a HELO/EHLO also resets any transaction
                self._reset_transaction()
                self.state = "ready"
                self.hello = event.domain
                self.extended = not isinstance(event, Helo)
        elif isinstance(event, Mail):
            if ok:
                self.state = "mail"
                self.sender = event.path
                self.mail_params_given = dict(event.params)
                self.smtputf8 = "SMTPUTF8" in event.params
        elif isinstance(event, Rcpt):
            if ok:
                self.state = "rcpt"
                self.recipients.append(event.path)
        elif isinstance(event, Data):
            if code == 354:
                self.state = "data"
                self._decoder = DataDecoder(self.bare_newlines)
                self._data_size = 0
                self._data_error = None
        elif isinstance(event, DataEnd):
            self._reset_transaction()   # the transaction ends, whatever the reply
        elif isinstance(event, Rset):
            if ok:
                self._reset_transaction()
        elif isinstance(event, Quit):
            self._close()
        elif isinstance(event, StartTls):
            if code == 220:
                # RFC 3207 §4.2: discard all knowledge from the client, and anything it
                # pipelined in the clear after STARTTLS (CVE-2011-0411).
                self._buf.clear()
                self._queued.clear()
                self._reset_transaction()
                self.tls = True
                self.state = "greeting"
                self.hello = None
                self.extended = False
                self.authenticated = False
        elif isinstance(event, (Auth, AuthResponse)):
            if code == 334:
                if self.state != "auth":
                    self._auth_return_state = self.state
                self.state = "auth"
            else:
                if self.state == "auth":
                    self.state = self._auth_return_state
                if code == 235:
                    self.authenticated = True

    def _reset_transaction(self) -> None:
        if self.state in ("mail", "rcpt", "data"):
            self.state = "ready"
        self.sender = None
        self.mail_params_given = {}
        self.recipients = []
        self.smtputf8 = False
        self._decoder = None

    def _close(self) -> None:
        self.state = "closed"
        self._buf.clear()
        self._queued.clear()


_HANDLERS = {
    "HELO": ServerConnection._hello,
    "EHLO": ServerConnection._hello,
    "LHLO": ServerConnection._hello,
    "MAIL": ServerConnection._mail,
    "RCPT": ServerConnection._rcpt,
    "DATA": ServerConnection._data,
    "RSET": ServerConnection._simple,
    "NOOP": ServerConnection._simple,
    "QUIT": ServerConnection._simple,
    "STARTTLS": ServerConnection._starttls,
    "AUTH": ServerConnection._auth,
    "VRFY": ServerConnection._vrfy,
    "EXPN": ServerConnection._vrfy,
    "HELP": ServerConnection._help,
}
