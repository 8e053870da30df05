"""The ManageSieve session state machine (RFC 5804). Sans-I/O.

Theory of operation: a `Session` is fed the client's bytes (`receive_data`) and returns a
list of events for the server to carry out, in order: `Send(bytes)`, `StartTls()` (upgrade
the stream, then call `tls_started()` and send what it returns), `Authenticate(login,
password)` (check the credentials off the event loop, then call `auth_result(user)`) and
`Close()`. While an authentication or TLS upgrade is pending, further input is parsed and
queued, not acted upon, so a pipelining client cannot overtake the state change.

States: NONAUTH (CAPABILITY, STARTTLS, AUTHENTICATE, NOOP, LOGOUT) → AUTH (the script
commands, UNAUTHENTICATE) → closed. Script operations go through a `ScriptStore` built by
`store_factory(user)`; PUTSCRIPT and CHECKSCRIPT compile with the real engine, so a script
that is accepted here is one delivery can run.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mailyard.sieve.grammar import SieveCompileError
from mailyard.sieve.managesieve.wire import Command, CommandReader, WireError, response, string
from mailyard.sieve.script import compile_script
from mailyard.sieve.storage import ScriptStore, StorageError
from mailyard.sieve.validate import EXTENSIONS

IMPLEMENTATION = "mailyard"
MAX_AUTH_FAILURES = 3

# Response codes (RFC 5804 §1.3)
ENCRYPT_NEEDED = "ENCRYPT-NEEDED"
NONEXISTENT = "NONEXISTENT"
TRYLATER = "TRYLATER"


@dataclass(frozen=True)
class Send:
    """Write these bytes to the client."""

    data: bytes


@dataclass(frozen=True)
class StartTls:
    """Upgrade the stream to TLS now, then call `Session.tls_started()`."""


@dataclass(frozen=True)
class Authenticate:
    """Check these credentials off the event loop, then call `Session.auth_result()`."""

    login: str
    password: str


@dataclass(frozen=True)
class Close:
    """Close the connection (after sending what came before)."""


Event = Send | StartTls | Authenticate | Close


@dataclass(frozen=True)
class SessionConfig:
    """What the server knows about this connection and its limits."""

    tls_available: bool = True
    tls_active: bool = False
    plaintext_allowed: bool = False   # loopback peer: PLAIN without TLS is fine
    max_redirects: int = 4
    max_literal: int = 1 << 20
    implementation: str = IMPLEMENTATION


def sieve_capability() -> str:
    """The SIEVE capability: what the engine implements (not a hand-kept list)."""
    return " ".join(e for e in EXTENSIONS
                    if e not in ("comparator-i;octet", "comparator-i;ascii-casemap"))


class Session:
    """One ManageSieve connection's protocol state (see the module docstring)."""

    def __init__(self, config: SessionConfig, store_factory: Callable[[str], ScriptStore]):
        self.config = config
        self.store_factory = store_factory
        self.reader = CommandReader(max_literal=config.max_literal)
        self.tls_active = config.tls_active
        self.user: str | None = None
        self.store: ScriptStore | None = None
        self.queue: deque[Command | WireError] = deque()
        self.waiting = False       # an Authenticate or StartTls is outstanding
        self.sasl_pending = False  # we sent a continuation, the next line is its answer
        self.auth_failures = 0
        self.closed = False

    # -- entry points --------------------------------------------------------------------
    def greeting(self) -> bytes:
        return self.capabilities() + response("OK", "mailyard ManageSieve ready.")

    def receive_data(self, data: bytes) -> list[Event]:
        if self.closed:
            return []
        self.queue.extend(self.reader.feed(data))
        return self._process()

    def tls_started(self) -> list[Event]:
        """RFC 5804 §2.2: after TLS the server re-issues its capabilities."""
        self.tls_active = True
        self.waiting = False
        self.reader = CommandReader(max_literal=self.config.max_literal)
        self.queue.clear()  # anything sent before the handshake is not trusted (STARTTLS
        # command injection)
        return [Send(self.capabilities() + response("OK", "TLS negotiation successful."))]

    def auth_result(self, user: str | None) -> list[Event]:
        self.waiting = False
        if user is None:
            self.auth_failures += 1
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self.closed = True
                return [Send(response("BYE", "Too many authentication failures.")), Close()]
            out: list[Event] = [Send(response("NO", "Authentication failed."))]
        else:
            self.user = user
            self.store = self.store_factory(user)
            out = [Send(response("OK", "Logged in."))]
        return out + self._process()

    def auth_unavailable(self) -> list[Event]:
        """The account store failed (not a wrong password): NO (TRYLATER)."""
        self.waiting = False
        return [Send(response("NO", "Authentication is unavailable, try later.", TRYLATER))
                ] + self._process()

    # -- dispatch ------------------------------------------------------------------------
    def _process(self) -> list[Event]:
        out: list[Event] = []
        while self.queue and not self.waiting and not self.closed:
            item = self.queue.popleft()
            if self.sasl_pending:
                self.sasl_pending = False
                out.extend(self._sasl_response(item))
                continue
            if isinstance(item, WireError):
                if item.fatal:
                    self.closed = True
                    out += [Send(response("BYE", item.message)), Close()]
                else:
                    out.append(Send(response("NO", item.message, item.code)))
                continue
            handler = getattr(self, "cmd_" + item.name.lower(), None)
            if handler is None:
                out.append(Send(response("NO", f"Unknown command {item.name[:40]}.")))
                continue
            needs_auth = item.name not in ("CAPABILITY", "STARTTLS", "AUTHENTICATE", "NOOP",
                                           "LOGOUT")
            if needs_auth and self.user is None:
                out.append(Send(response("NO", "Authenticate first.")))
                continue
            try:
                inspect.signature(handler).bind(*item.arguments)
            except TypeError:
                out.append(Send(response("NO", f"Wrong arguments for {item.name}.")))
                continue
            try:
                out.extend(handler(*item.arguments))
            except StorageError as exc:
                out.append(Send(response("NO", exc.message, exc.code)))
        return out

    def capabilities(self) -> bytes:
        lines = [string("IMPLEMENTATION") + b" " + string(self.config.implementation)]
        if self.tls_active or self.config.plaintext_allowed:
            lines.append(string("SASL") + b" " + string("PLAIN"))
        else:
            lines.append(string("SASL") + b" " + string(""))
        lines.append(string("SIEVE") + b" " + string(sieve_capability()))
        if self.config.tls_available and not self.tls_active and self.user is None:
            lines.append(string("STARTTLS"))
        lines.append(string("MAXREDIRECTS") + b" " + string(str(self.config.max_redirects)))
        lines.append(string("VERSION") + b" " + string("1.0"))
        lines.append(string("UNAUTHENTICATE"))
        if self.user is not None:
            lines.append(string("OWNER") + b" " + string(self.user))
        return b"".join(line + b"\r\n" for line in lines)

    # -- non-authenticated commands ------------------------------------------------------
    def cmd_capability(self) -> list[Event]:
        return [Send(self.capabilities() + response("OK", "Capability completed."))]

    def cmd_noop(self, tag: str | None = None) -> list[Event]:
        if tag is None:
            return [Send(response("OK", "Done."))]
        # RFC 5804 §2.11: echo the tag in a TAG response code.
        return [Send(b"OK (TAG " + string(str(tag)) + b') "Done."\r\n')]

    def cmd_logout(self) -> list[Event]:
        self.closed = True
        return [Send(response("OK", "Logout completed.")), Close()]

    def cmd_starttls(self) -> list[Event]:
        if self.tls_active or not self.config.tls_available:
            return [Send(response("NO", "TLS is not available now."))]
        if self.user is not None:
            return [Send(response("NO", "STARTTLS is only allowed before AUTHENTICATE."))]
        self.waiting = True
        return [Send(response("OK", "Begin TLS negotiation now.")), StartTls()]

    def cmd_authenticate(self, mechanism: str, initial: str | None = None) -> list[Event]:
        if self.user is not None:
            return [Send(response("NO", "Already authenticated."))]
        if str(mechanism).upper() != "PLAIN":
            return [Send(response("NO", f"Unsupported mechanism {str(mechanism)[:20]}."))]
        if not (self.tls_active or self.config.plaintext_allowed):
            # RFC 5804 §2.1 / RFC 4616 §4: no plaintext passwords over an open channel.
            return [Send(response("NO", "Use STARTTLS before AUTHENTICATE PLAIN.",
                                  ENCRYPT_NEEDED))]
        if initial is None:
            self.sasl_pending = True
            self.reader.sasl_mode = True
            return [Send(string("") + b"\r\n")]
        return self._plain(str(initial))

    def _sasl_response(self, item) -> list[Event]:
        if isinstance(item, WireError) or len(item.arguments) != 1:
            return [Send(response("NO", "Bad SASL response."))]
        value = item.arguments[0]
        if value == "*":
            return [Send(response("NO", "Authentication cancelled."))]
        return self._plain(str(value))

    def _plain(self, encoded: str) -> list[Event]:
        try:
            decoded = base64.b64decode(encoded.encode("ascii"), validate=True).decode("utf-8")
            authzid, login, password = decoded.split("\x00")
        except (binascii.Error, UnicodeError, ValueError):
            return [Send(response("NO", "Malformed PLAIN response."))]
        if authzid and authzid != login:
            return [Send(response("NO", "Authorization identity must match."))]
        if not login or not password:
            return [Send(response("NO", "Authentication failed."))]
        self.waiting = True
        return [Authenticate(login, password)]

    # -- authenticated commands ----------------------------------------------------------
    def cmd_unauthenticate(self) -> list[Event]:
        self.user = None
        self.store = None
        return [Send(response("OK", "Unauthenticate completed."))]

    def cmd_listscripts(self) -> list[Event]:
        lines = b"".join(string(name) + (b" ACTIVE" if active else b"") + b"\r\n"
                         for name, active in self.store.list())
        return [Send(lines + response("OK", "Listscripts completed."))]

    def _compile(self, name: str, text: str) -> list[Event] | None:
        try:
            compile_script(text, name=name)
        except SieveCompileError as exc:
            return [Send(response("NO", f"{name}: line {exc.line}, column {exc.column}: "
                                        f"{exc.message}"))]
        return None

    def cmd_putscript(self, name: str, text: str) -> list[Event]:
        name, text = str(name), str(text)
        self.store.check_space(name, len(text.encode("utf-8")))
        errors = self._compile(name, text)
        if errors:
            return errors
        self.store.put(name, text)
        return [Send(response("OK", "Putscript completed."))]

    def cmd_checkscript(self, text: str) -> list[Event]:
        errors = self._compile("script", str(text))
        return errors or [Send(response("OK", "Script is valid."))]

    def cmd_getscript(self, name: str) -> list[Event]:
        text = self.store.get(str(name))
        raw = text.encode("utf-8")
        return [Send(b"{%d}\r\n" % len(raw) + raw + b"\r\n" +
                     response("OK", "Getscript completed."))]

    def cmd_setactive(self, name: str) -> list[Event]:
        self.store.set_active(str(name))
        return [Send(response("OK", "Setactive completed."))]

    def cmd_deletescript(self, name: str) -> list[Event]:
        self.store.delete(str(name))
        return [Send(response("OK", "Deletescript completed."))]

    def cmd_renamescript(self, old: str, new: str) -> list[Event]:
        self.store.rename(str(old), str(new))
        return [Send(response("OK", "Renamescript completed."))]

    def cmd_havespace(self, name: str, size: int) -> list[Event]:
        if not isinstance(size, int):
            return [Send(response("NO", "HAVESPACE needs a number."))]
        self.store.check_space(str(name), size)
        return [Send(response("OK", "Putscript would succeed."))]
