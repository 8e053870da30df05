"""POP3 wire protocol, sans-I/O: RFC 1939, CAPA (RFC 2449), AUTH (RFC 5034), STLS (RFC 2595).

Theory of operation
-------------------
`ServerProtocol` is one POP3 server connection without the socket. Bytes from the client go in
with `receive_data()`; `next_event()` returns one typed command at a time (`Stat`, `Retr`,
`Login`, ...), or `NEED_DATA` when no complete line is buffered, or `CLOSED` once the
conversation is over. Everything the server says accumulates in an output buffer that the I/O
layer collects with `data_to_send()`.

The machine follows RFC 1939 §3: AUTHORIZATION → TRANSACTION → UPDATE, plus CLOSED. Each verb
is allowed in a fixed set of states (`_ALLOWED`). A command that is unknown, malformed, too
long, or not allowed in the current state never reaches the application: the protocol answers
`-ERR` itself and counts it, and when the count passes `max_bad_commands` it says a final
`-ERR` and closes. Commands the application does receive are answered by the application
through `ok()`, `err()` and `multiline()`, and the application moves the machine forward:
`login_succeeded()` (AUTHORIZATION → TRANSACTION) after it has checked a `Login` and locked
the maildrop, `tls_started()` after the TLS handshake that follows an `Stls` event. Emitting
`Quit` moves AUTHORIZATION → CLOSED, or TRANSACTION → UPDATE, where the application commits
the deletions, answers, and closes (§6: deletions happen only here).

Credentials reach the application as a single `Login` event whichever way they came: USER then
PASS (§7; PASS is accepted only right after an accepted USER), or AUTH PLAIN (RFC 5034 / RFC
4616) with the initial response on the AUTH line or in a continuation after `+ `. Whether
plaintext credentials are acceptable at all (TLS, loopback, config) is the `plaintext_allowed`
flag the I/O layer sets; it also decides what CAPA lists, so capabilities are computed from the
connection's situation, never hand-listed.

Message bodies are turned into their wire form by `mailyard.pop3.wire` (re-exported here).
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass

from mailyard.pop3.wire import (  # noqa: F401  (re-exported: the wire form of messages)
    CRLF,
    byte_stuff,
    to_crlf,
    top_of,
    wire_message,
    wire_size,
)

# -- replies ------------------------------------------------------------------------------
OK = b"+OK"
ERR = b"-ERR"
CONTINUE = b"+ "
TERMINATOR = b".\r\n"

# RFC 2449 §8 / RFC 3206 extended response codes.
CODE_IN_USE = "IN-USE"
CODE_LOGIN_DELAY = "LOGIN-DELAY"
CODE_SYS_TEMP = "SYS/TEMP"
CODE_SYS_PERM = "SYS/PERM"
CODE_AUTH = "AUTH"

GREETING = "mailyard POP3 ready."
REPLY_LOGGED_IN = "Logged in."
REPLY_AUTH_FAILED = "Authentication failed."
REPLY_IN_USE = "Mailbox is in use by another POP3 session."
REPLY_TEMPFAIL = "Temporary server failure, try again later."
REPLY_THROTTLED = "Too many failed logins from your address, try again later."
REPLY_PLAINTEXT_REFUSED = "Plaintext authentication disallowed on non-secure (TLS) connections."
REPLY_UNKNOWN = "Unknown command."
REPLY_WRONG_STATE = "Command not valid in this state."
REPLY_SYNTAX = "Syntax error in arguments."
REPLY_LINE_TOO_LONG = "Line too long."
REPLY_TOO_MANY_ERRORS = "Too many bad commands, closing connection."
REPLY_NO_USER = "No USER given before PASS."
REPLY_APOP_DISABLED = "APOP is not available, use USER/PASS or AUTH PLAIN."
REPLY_MECHANISM = "Unsupported authentication mechanism."
REPLY_AUTH_CANCELLED = "Authentication cancelled."
REPLY_BAD_BASE64 = "Invalid base64 data."
REPLY_TLS_ACTIVE = "TLS is already active."
REPLY_TLS_UNAVAILABLE = "TLS is not available."
REPLY_BEGIN_TLS = "Begin TLS negotiation now."
REPLY_NO_MESSAGE = "No such message."
REPLY_DELETED = "Message is deleted."
REPLY_BYE = "mailyard POP3 signing off."
REPLY_IDLE = "Idle timeout, closing connection."

IMPLEMENTATION = "mailyard"
DEFAULT_MAX_LINE = 2048
DEFAULT_MAX_BAD_COMMANDS = 20


class ProtocolError(Exception):
    """Misuse of the protocol object by the application (never raised for client input)."""


class State(enum.Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")
_TOO_LONG = _Sentinel("TOO_LONG")


# -- typed commands -------------------------------------------------------------------------
@dataclass(frozen=True)
class Login:
    """Credentials to check: from USER+PASS (mechanism "USER") or AUTH PLAIN ("PLAIN")."""

    login: str
    password: str
    mechanism: str
    authzid: str = ""


@dataclass(frozen=True)
class Stls:
    """RFC 2595 §4: the client asks for TLS; answer +OK, handshake, then `tls_started()`."""


@dataclass(frozen=True)
class Stat:
    pass


@dataclass(frozen=True)
class List:
    """LIST with an optional message number (None = scan listing of every message)."""

    number: int | None


@dataclass(frozen=True)
class Uidl:
    number: int | None


@dataclass(frozen=True)
class Retr:
    number: int


@dataclass(frozen=True)
class Top:
    number: int
    lines: int


@dataclass(frozen=True)
class Dele:
    number: int


@dataclass(frozen=True)
class Noop:
    pass


@dataclass(frozen=True)
class Rset:
    pass


@dataclass(frozen=True)
class Quit:
    """QUIT; in TRANSACTION the machine is now in UPDATE: commit deletions, answer, close."""


@dataclass(frozen=True)
class TooManyErrors:
    """The client sent too many bad commands; a final -ERR is queued, the machine is CLOSED."""


Event = (Login | Stls | Stat | List | Uidl | Retr | Top | Dele | Noop | Rset | Quit
         | TooManyErrors)

A, T = State.AUTHORIZATION, State.TRANSACTION
# RFC 1939 §4-§7, RFC 2449 §5 (CAPA in both states), RFC 2595 §4 (STLS in AUTHORIZATION).
_ALLOWED: dict[str, frozenset[State]] = {
    "USER": frozenset({A}), "PASS": frozenset({A}), "APOP": frozenset({A}),
    "AUTH": frozenset({A}), "STLS": frozenset({A}), "CAPA": frozenset({A, T}),
    "QUIT": frozenset({A, T}), "STAT": frozenset({T}), "LIST": frozenset({T}),
    "RETR": frozenset({T}), "DELE": frozenset({T}), "NOOP": frozenset({T}),
    "RSET": frozenset({T}), "TOP": frozenset({T}), "UIDL": frozenset({T}),
}

# RFC 1939 §3: arguments are "a message-number"; we take 1-10 decimal digits, no sign.
_NUMBER = re.compile(r"[0-9]{1,10}\Z")
_SASL_MECHANISMS = ("PLAIN",)


def _number(text: str) -> int | None:
    return int(text) if _NUMBER.match(text) else None


def _b64decode(text: str) -> bytes | None:
    # RFC 5034 §4: "=" is an empty initial response.
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def format_reply(positive: bool, text: str = "", code: str | None = None) -> bytes:
    """One status line: `+OK text` / `-ERR [CODE] text` (RFC 2449 §8 codes in brackets)."""
    parts = [OK if positive else ERR]
    if code:
        parts.append(f"[{code}]".encode("ascii"))
    if text:
        parts.append(text.encode("utf-8"))
    return b" ".join(parts) + CRLF


# -- the state machine ----------------------------------------------------------------------
class ServerProtocol:
    """One POP3 server connection, sans-I/O (see the module docstring for its states).

    The I/O layer sets `plaintext_allowed` and `tls_available` before (and after STLS)
    feeding data; it must not read `data_to_send()` concurrently with its own writes.
    """

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE,
                 max_bad_commands: int = DEFAULT_MAX_BAD_COMMANDS,
                 tls_active: bool = False, tls_available: bool = False,
                 plaintext_allowed: bool = True, greeting: str = GREETING):
        self.state = State.AUTHORIZATION
        self.max_line = max_line
        self.max_bad_commands = max_bad_commands
        self.tls_active = tls_active
        self.tls_available = tls_available
        self.plaintext_allowed = plaintext_allowed
        self.bad_commands = 0
        self._in = bytearray()
        self._out: list[bytes] = []
        self._discarding = False        # inside an over-long line, dropping until LF
        self._user: str | None = None   # USER accepted, PASS may follow
        self._sasl: str | None = None   # mechanism awaiting a continuation line
        self._stls_pending = False
        self._out.append(format_reply(True, greeting))

    # -- output ---------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    def chunks_to_send(self) -> list[bytes]:
        """Like `data_to_send()` but as the list of pieces (no copy of message bodies)."""
        out, self._out = self._out, []
        return out

    def ok(self, text: str = "", code: str | None = None) -> None:
        self._out.append(format_reply(True, text, code))

    def err(self, text: str, code: str | None = None) -> None:
        self._out.append(format_reply(False, text, code))

    def multiline(self, text: str, body: bytes) -> None:
        """`+OK text`, then `body` (already in wire form, CRLF-terminated or empty), then "."."""
        self._out.append(format_reply(True, text))
        if body:
            self._out.append(body)
        self._out.append(TERMINATOR)

    def multiline_frame(self, text: str) -> tuple[bytes, bytes]:
        """The `+OK text` line and the "." line of a multi-line answer whose body the I/O
        layer sends itself, between the two (a file that is already in wire form, sent with
        sendfile). Nothing is queued: the caller sends all three, in order."""
        return format_reply(True, text), TERMINATOR

    def multiline_lines(self, text: str, lines: list[str]) -> None:
        body = "".join(f"{line}\r\n" for line in lines).encode("utf-8")
        self.multiline(text, byte_stuff(body))

    # -- transitions driven by the application ----------------------------------------
    def login_succeeded(self, text: str = REPLY_LOGGED_IN) -> None:
        if self.state is not State.AUTHORIZATION:
            raise ProtocolError(f"login_succeeded() in {self.state.name}")
        self.state = State.TRANSACTION
        self.ok(text)

    def login_failed(self, text: str = REPLY_AUTH_FAILED, code: str | None = CODE_AUTH) -> None:
        self.err(text, code)

    def tls_started(self) -> None:
        """The handshake after STLS succeeded: forget everything said in plaintext."""
        if not self._stls_pending:
            raise ProtocolError("tls_started() without STLS")
        self._stls_pending = False
        self.tls_active = True
        self._user = None
        # RFC 2595 §4 / CVE-2011-0411: bytes pipelined after STLS were sent in plaintext
        # and must not be executed inside the TLS session.
        self._in.clear()
        self._discarding = False

    def close(self) -> None:
        self.state = State.CLOSED

    @property
    def stls_pending(self) -> bool:
        return self._stls_pending

    # -- input ----------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED or self._stls_pending:
            return
        self._in += data

    @property
    def buffered_input(self) -> int:
        """Octets received and not yet parsed (the I/O layer stops reading above a bound)."""
        return len(self._in)

    def capabilities(self) -> list[str]:
        """RFC 2449 §6 capability lines for the current state and connection."""
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self.plaintext_allowed:
                caps.append("USER")
                caps.append("SASL " + " ".join(_SASL_MECHANISMS))
            if self.tls_available and not self.tls_active:
                caps.append("STLS")
        caps.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        return caps

    def _bad(self, text: str, code: str | None = None) -> Event | None:
        self.bad_commands += 1
        if self.bad_commands > self.max_bad_commands:
            self.err(REPLY_TOO_MANY_ERRORS)
            self.state = State.CLOSED
            return TooManyErrors()
        self.err(text, code)
        return None

    def _next_line(self) -> bytes | None | _Sentinel:
        """A complete line without its ending, None if incomplete, or `_TOO_LONG`."""
        while True:
            nl = self._in.find(b"\n")
            if self._discarding:
                # The rest of an over-long line, already answered: drop it up to its LF.
                if nl < 0:
                    self._in.clear()
                    return None
                del self._in[:nl + 1]
                self._discarding = False
                continue
            if nl < 0:
                if len(self._in) > self.max_line:
                    self._in.clear()
                    self._discarding = True
                    return _TOO_LONG
                return None
            if nl + 1 > self.max_line:
                del self._in[:nl + 1]
                return _TOO_LONG
            line = bytes(self._in[:nl])
            del self._in[:nl + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            return line

    def next_event(self) -> Event | _Sentinel:
        while True:
            if self.state in (State.CLOSED, State.UPDATE):
                return CLOSED
            if self._stls_pending:
                return NEED_DATA
            raw = self._next_line()
            if raw is None:
                return NEED_DATA
            if raw is _TOO_LONG:
                self._sasl = None
                ev = self._bad(REPLY_LINE_TOO_LONG)
            else:
                ev = self._handle_line(raw)
            if ev is not None:
                return ev

    def _handle_line(self, raw: bytes) -> Event | None:
        if b"\0" in raw:
            self._sasl = None
            return self._bad(REPLY_SYNTAX)
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._sasl = None
            return self._bad(REPLY_SYNTAX)
        if self._sasl is not None:
            mechanism, self._sasl = self._sasl, None
            return self._sasl_response(mechanism, line.strip())
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        allowed = _ALLOWED.get(verb)
        if allowed is None:
            self._user = None
            return self._bad(REPLY_UNKNOWN)
        if self.state not in allowed:
            self._user = None
            return self._bad(REPLY_WRONG_STATE)
        pending_user, self._user = self._user, None
        return getattr(self, "_cmd_" + verb.lower())(rest, pending_user)

    # -- AUTHORIZATION commands -------------------------------------------------------
    def _cmd_user(self, rest: str, _pending: str | None) -> Event | None:
        if not self.plaintext_allowed:
            # Counted: a client that ignores CAPA and keeps trying gets disconnected.
            return self._bad(REPLY_PLAINTEXT_REFUSED, CODE_AUTH)
        name = rest.strip()
        if not name or " " in name:
            return self._bad(REPLY_SYNTAX)
        # RFC 1939 §7: always +OK, so USER does not tell which names exist.
        self._user = name
        self.ok()
        return None

    def _cmd_pass(self, rest: str, pending: str | None) -> Event | None:
        # RFC 1939 §7: the password is the rest of the line and may contain spaces.
        if pending is None:
            return self._bad(REPLY_NO_USER)
        if not self.plaintext_allowed:
            # Counted: a client that ignores CAPA and keeps trying gets disconnected.
            return self._bad(REPLY_PLAINTEXT_REFUSED, CODE_AUTH)
        return Login(pending, rest, "USER")

    def _cmd_apop(self, rest: str, _pending: str | None) -> Event | None:
        # APOP needs the cleartext secret on the server; we store only hashes (off).
        return self._bad(REPLY_APOP_DISABLED)

    def _cmd_auth(self, rest: str, _pending: str | None) -> Event | None:
        args = rest.split()
        if not args:
            # Pre-RFC 5034 clients list mechanisms with a bare AUTH (RFC 1734 usage).
            self.multiline_lines("", list(_SASL_MECHANISMS))
            return None
        if len(args) > 2:
            return self._bad(REPLY_SYNTAX)
        mechanism = args[0].upper()
        if mechanism not in _SASL_MECHANISMS:
            return self._bad(REPLY_MECHANISM)
        if not self.plaintext_allowed:
            # Counted: a client that ignores CAPA and keeps trying gets disconnected.
            return self._bad(REPLY_PLAINTEXT_REFUSED, CODE_AUTH)
        if len(args) == 1:
            self._sasl = mechanism
            self._out.append(CONTINUE + CRLF)
            return None
        return self._sasl_response(mechanism, args[1])

    def _sasl_response(self, mechanism: str, text: str) -> Event | None:
        if text == "*":
            # RFC 5034 §4: a "*" cancels; the server MUST reject the AUTH command.
            self.err(REPLY_AUTH_CANCELLED)
            return None
        decoded = _b64decode(text)
        if decoded is None:
            return self._bad(REPLY_BAD_BASE64)
        # RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
        parts = decoded.split(b"\0")
        if len(parts) != 3 or not parts[1]:
            self.login_failed()
            return None
        try:
            authzid, authcid, password = (p.decode("utf-8") for p in parts)
        except UnicodeDecodeError:
            self.login_failed()
            return None
        return Login(authcid, password, mechanism, authzid)

    def _cmd_stls(self, rest: str, _pending: str | None) -> Event | None:
        if rest.strip():
            return self._bad(REPLY_SYNTAX)
        if self.tls_active:
            self.err(REPLY_TLS_ACTIVE)
            return None
        if not self.tls_available:
            self.err(REPLY_TLS_UNAVAILABLE)
            return None
        self.ok(REPLY_BEGIN_TLS)
        self._stls_pending = True
        return Stls()

    def _cmd_capa(self, rest: str, _pending: str | None) -> Event | None:
        self.multiline_lines("Capability list follows", self.capabilities())
        return None

    def _cmd_quit(self, rest: str, _pending: str | None) -> Event | None:
        if self.state is State.AUTHORIZATION:
            self.state = State.CLOSED
        else:
            self.state = State.UPDATE  # RFC 1939 §6
        return Quit()

    # -- TRANSACTION commands ---------------------------------------------------------
    def _no_args(self, rest: str, event: Event) -> Event | None:
        return event if not rest.strip() else self._bad(REPLY_SYNTAX)

    def _optional_number(self, rest: str) -> tuple[bool, int | None]:
        args = rest.split()
        if not args:
            return True, None
        if len(args) == 1:
            number = _number(args[0])
            if number is not None:
                return True, number
        return False, None

    def _cmd_stat(self, rest: str, _p: str | None) -> Event | None:
        return self._no_args(rest, Stat())

    def _cmd_noop(self, rest: str, _p: str | None) -> Event | None:
        return self._no_args(rest, Noop())

    def _cmd_rset(self, rest: str, _p: str | None) -> Event | None:
        return self._no_args(rest, Rset())

    def _cmd_list(self, rest: str, _p: str | None) -> Event | None:
        good, number = self._optional_number(rest)
        return List(number) if good else self._bad(REPLY_SYNTAX)

    def _cmd_uidl(self, rest: str, _p: str | None) -> Event | None:
        good, number = self._optional_number(rest)
        return Uidl(number) if good else self._bad(REPLY_SYNTAX)

    def _one_number(self, rest: str) -> int | None:
        args = rest.split()
        return _number(args[0]) if len(args) == 1 else None

    def _cmd_retr(self, rest: str, _p: str | None) -> Event | None:
        number = self._one_number(rest)
        return Retr(number) if number is not None else self._bad(REPLY_SYNTAX)

    def _cmd_dele(self, rest: str, _p: str | None) -> Event | None:
        number = self._one_number(rest)
        return Dele(number) if number is not None else self._bad(REPLY_SYNTAX)

    def _cmd_top(self, rest: str, _p: str | None) -> Event | None:
        args = rest.split()
        if len(args) == 2:
            number, lines = _number(args[0]), _number(args[1])
            if number is not None and lines is not None:
                return Top(number, lines)
        return self._bad(REPLY_SYNTAX)
