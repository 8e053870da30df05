"""One IMAP session: the state machine of RFC 3501 §3 over a parsed command stream.

Theory of operation: the server (imap/server.py) frames the client's bytes into commands
(proto/framing.py), and hands each complete command's bytes to `ImapSession.handle`, which
parses it (proto/parser.py), checks it is allowed in the current state (not authenticated →
authenticated → selected → logout), runs the operation (imap/ops/...) against the user's
Maildir store, and writes responses through the `send` coroutine it was given. After every
command in the selected state, the session polls the mailbox and sends the untagged updates
(EXISTS / EXPUNGE / FETCH FLAGS) that other sessions' changes caused.

A few commands need the connection itself; `handle` returns a `Directive` for them and the
server does the socket part: STARTTLS (upgrade after the OK), COMPRESS (wrap the streams),
AUTHENTICATE without an initial response (send `+`, read one line, call `auth_response`),
IDLE (wait for changes or DONE, calling `idle_poll` / `idle_done`), LOGOUT (close).

Errors: a ParseError is answered BAD and counted; `max_errors` BADs in a row end the session
with BYE (hostile or confused client). Store errors become NO with the RFC 5530 code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mailyard.imap import responses as r
from mailyard.imap.proto.parser import parse
from mailyard.imap.proto.types import Command, ParseError
from mailyard.log import event, get_logger

log = get_logger("imap")

Send = Callable[[bytes], Awaitable[None]]


class State(enum.Enum):
    NOT_AUTHENTICATED = 1
    AUTHENTICATED = 2
    SELECTED = 3
    LOGOUT = 4


class Directive(enum.Enum):
    """What the connection must do after `handle` returned."""

    STARTTLS = 1
    COMPRESS = 2
    AUTH_CONTINUE = 3
    IDLE = 4
    LOGOUT = 5
    CLOSE = 6


@dataclass
class SessionContext:
    """What a session needs from the process: auth, the user's store, limits, transport."""

    authenticate: Callable[[str, str], Awaitable[str | None]]
    open_store: Callable[[str], object]
    client_ip: str = "127.0.0.1"
    tls: bool = False
    starttls_available: bool = True
    plaintext_login: bool = True          # False: LOGINDISABLED until TLS
    max_errors: int = 20
    max_append: int = 64 * 1024 * 1024
    spam_learn_dir: object = None          # Path of data_dir/spam-learn, or None
    hostname: str = "localhost"
    on_auth_failure: Callable[[str], Awaitable[None]] | None = None


BASE_CAPABILITIES = (
    "IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UNSELECT",
    "CHILDREN", "UIDPLUS", "MOVE", "SPECIAL-USE", "CREATE-SPECIAL-USE", "LIST-EXTENDED",
    "LIST-STATUS", "ESEARCH", "CONDSTORE", "QRESYNC", "SORT", "THREAD=REFERENCES",
    "THREAD=ORDEREDSUBJECT", "COMPRESS=DEFLATE",
)

# Which commands each state allows (RFC 3501 §6.1-6.4).
ANY_STATE = {"CAPABILITY", "NOOP", "LOGOUT", "ID"}
NOT_AUTH_ONLY = {"LOGIN", "AUTHENTICATE", "STARTTLS"}
AUTH_OR_SELECTED = {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
                    "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE",
                    "ENABLE", "COMPRESS"}
SELECTED_ONLY = {"CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
                 "UNSELECT", "SORT", "THREAD"}


class ImapSession:
    """The per-connection IMAP state machine (see module docstring)."""

    def __init__(self, ctx: SessionContext, send: Send):
        self.ctx = ctx
        self.send = send
        self.state = State.NOT_AUTHENTICATED
        self.user: str | None = None
        self.store = None
        self.selected = None          # ops.selected.SelectedMailbox
        self.enabled: set[str] = set()
        self.errors = 0
        self.compressed = False
        self._pending_auth: str | None = None
        self._idle_tag: str | None = None

    # -- capabilities ----------------------------------------------------------------------
    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state is State.NOT_AUTHENTICATED:
            if not self.ctx.tls and self.ctx.starttls_available:
                caps.append("STARTTLS")
            if self.login_allowed():
                caps.append("AUTH=PLAIN")
            else:
                caps.append("LOGINDISABLED")  # RFC 3501 §6.2.3
        if self.compressed:
            caps.remove("COMPRESS=DEFLATE")
        caps.append(f"APPENDLIMIT={self.ctx.max_append}")
        return caps

    def login_allowed(self) -> bool:
        return self.ctx.tls or self.ctx.plaintext_login

    def greeting(self) -> bytes:
        caps = " ".join(self.capabilities())
        return r.untagged(f"OK [CAPABILITY {caps}] {self.ctx.hostname} mailyard IMAP ready")

    # -- dispatch --------------------------------------------------------------------------
    async def handle(self, data: bytes) -> Directive | None:
        """Run one complete command (bytes as framed, literals inline)."""
        try:
            cmd = parse(data)
        except ParseError as exc:
            return await self._bad(exc.tag, str(exc), exc.code)
        name = cmd.name
        allowed = (name in ANY_STATE
                   or (name in NOT_AUTH_ONLY and self.state is State.NOT_AUTHENTICATED)
                   or (name in AUTH_OR_SELECTED and self.state in (State.AUTHENTICATED,
                                                                   State.SELECTED))
                   or (name in SELECTED_ONLY and self.state is State.SELECTED))
        if not allowed:
            where = {State.NOT_AUTHENTICATED: "before authentication",
                     State.AUTHENTICATED: "without a selected mailbox",
                     State.SELECTED: "after authentication"}.get(self.state, "now")
            return await self._bad(cmd.tag, f"{name} is not allowed {where}")
        self.errors = 0
        handler = getattr(self, "cmd_" + name.lower(), None)
        if handler is None:
            from mailyard.imap.ops import dispatch

            handler = dispatch.handler(self, name)
        try:
            directive = await handler(cmd)
        except ParseError as exc:
            return await self._bad(cmd.tag, str(exc), exc.code)
        except Exception as exc:
            from mailyard.imap.ops.errors import store_error_response

            response = store_error_response(exc)
            if response is None:
                log.exception("imap: %s failed", name)
                response = (r.NO, f"{r.SERVERBUG} internal error")
            await self.send(r.tagged(cmd.tag, response[0], f"{response[1]}"))
            return None
        return directive

    async def _bad(self, tag: str, text: str, code: str | None = None) -> Directive | None:
        self.errors += 1
        if code and code.startswith("BADCHARSET"):
            await self.send(r.tagged(tag, r.NO, f"[{code}] {text}"))
            return None
        await self.send(r.tagged(tag, r.BAD, f"{('[' + code + '] ') if code else ''}{text}"))
        if self.errors >= self.ctx.max_errors:
            await self.send(r.untagged("BYE too many errors"))
            self.state = State.LOGOUT
            return Directive.CLOSE
        return None

    async def ok(self, tag: str, text: str = "completed") -> None:
        await self.send(r.tagged(tag, r.OK, text))

    async def no(self, tag: str, text: str) -> None:
        await self.send(r.tagged(tag, r.NO, text))

    async def updates(self, allow_expunge: bool = True) -> None:
        """Untagged EXISTS / EXPUNGE / FETCH for changes since the client last heard."""
        if self.selected is not None:
            lines = await asyncio.to_thread(self.selected.poll, allow_expunge)
            if lines:
                await self.send(b"".join(lines))

    # -- any state -------------------------------------------------------------------------
    async def cmd_capability(self, cmd: Command):
        await self.send(r.untagged("CAPABILITY " + " ".join(self.capabilities())))
        await self.ok(cmd.tag, "CAPABILITY completed")

    async def cmd_noop(self, cmd: Command):
        await self.updates()
        await self.ok(cmd.tag, "NOOP completed")

    async def cmd_logout(self, cmd: Command):
        await self.send(r.untagged("BYE logging out"))
        await self.ok(cmd.tag, "LOGOUT completed")
        self.state = State.LOGOUT
        return Directive.LOGOUT

    async def cmd_id(self, cmd: Command):
        # RFC 2971: answer with our own identification
        await self.send(r.untagged('ID ("name" "mailyard" "vendor" "mailyard")'))
        await self.ok(cmd.tag, "ID completed")

    # -- not authenticated -----------------------------------------------------------------
    async def cmd_starttls(self, cmd: Command):
        if self.ctx.tls or not self.ctx.starttls_available:
            await self.send(r.tagged(cmd.tag, r.BAD, "TLS is already active or unavailable"))
            return None
        await self.ok(cmd.tag, "begin TLS negotiation now")
        return Directive.STARTTLS

    def tls_started(self) -> None:
        self.ctx.tls = True

    async def cmd_login(self, cmd: Command):
        if not self.login_allowed():
            # RFC 3501 §6.2.3: LOGINDISABLED → the client must not and we refuse
            await self.no(cmd.tag, f"{r.PRIVACYREQUIRED} use STARTTLS first")
            return None
        user, password = cmd.args
        return await self._login(cmd.tag, user, password)

    async def _login(self, tag: str, login: str, password: str):
        canonical = await self.ctx.authenticate(login, password)
        if canonical is None:
            event(log, "login failed", client=self.ctx.client_ip, login=login)
            if self.ctx.on_auth_failure is not None:
                await self.ctx.on_auth_failure(self.ctx.client_ip)
            await self.no(tag, f"{r.AUTHENTICATIONFAILED} invalid credentials")
            return
        self.user = canonical
        self.store = await asyncio.to_thread(self.ctx.open_store, canonical)
        self.state = State.AUTHENTICATED
        event(log, "login", client=self.ctx.client_ip, user=canonical, tls=self.ctx.tls)
        caps = " ".join(self.capabilities())
        await self.ok(tag, f"[CAPABILITY {caps}] logged in")
        return

    async def cmd_authenticate(self, cmd: Command):
        mechanism, initial = cmd.args
        if mechanism != "PLAIN":
            await self.no(cmd.tag, "[CANNOT] unsupported mechanism; use PLAIN")
            return None
        if not self.login_allowed():
            await self.no(cmd.tag, f"{r.PRIVACYREQUIRED} use STARTTLS first")
            return None
        if initial is None:
            self._pending_auth = cmd.tag
            return Directive.AUTH_CONTINUE
        return await self._auth_plain(cmd.tag, initial.encode())

    async def auth_response(self, line: bytes):
        """The client's answer to our `+` during AUTHENTICATE."""
        tag, self._pending_auth = self._pending_auth or "*", None
        if line.strip() == b"*":   # RFC 3501 §6.2.2: the client cancels
            await self.send(r.tagged(tag, r.BAD, "authentication cancelled"))
            return None
        return await self._auth_plain(tag, line.strip())

    async def _auth_plain(self, tag: str, b64: bytes):
        try:
            raw = b"" if b64 == b"=" else base64.b64decode(b64, validate=True)
            authzid, authcid, password = raw.split(b"\0")
            authzid_s, login, pw = (x.decode("utf-8") for x in (authzid, authcid, password))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            await self.send(r.tagged(tag, r.BAD, "malformed PLAIN response (RFC 4616)"))
            return None
        if authzid_s and authzid_s.lower() != login.lower():
            await self.no(tag, f"{r.AUTHENTICATIONFAILED} proxy authorization not allowed")
            return None
        return await self._login(tag, login, pw)

    # -- authenticated ---------------------------------------------------------------------
    async def cmd_enable(self, cmd: Command):
        done = []
        for cap in cmd.args:
            if cap in ("CONDSTORE", "QRESYNC") and cap not in self.enabled:
                self.enabled.add(cap)
                if cap == "QRESYNC":
                    self.enabled.add("CONDSTORE")
                done.append(cap)
        if self.selected is not None:
            self.selected.condstore = "CONDSTORE" in self.enabled
            self.selected.qresync = "QRESYNC" in self.enabled
        await self.send(r.untagged("ENABLED" + "".join(" " + c for c in done)))
        await self.ok(cmd.tag, "ENABLE completed")

    async def cmd_namespace(self, cmd: Command):
        await self.send(r.untagged('NAMESPACE (("" ".")) NIL NIL'))
        await self.ok(cmd.tag, "NAMESPACE completed")

    async def cmd_compress(self, cmd: Command):
        if cmd.args[0] != "DEFLATE":
            await self.send(r.tagged(cmd.tag, r.BAD, "only DEFLATE"))
            return None
        if self.compressed:
            await self.no(cmd.tag, "[COMPRESSIONACTIVE] already compressing")
            return None
        await self.ok(cmd.tag, "DEFLATE active")
        self.compressed = True
        return Directive.COMPRESS

    async def cmd_idle(self, cmd: Command):
        self._idle_tag = cmd.tag
        await self.updates()
        await self.send(b"+ idling\r\n")
        return Directive.IDLE

    async def idle_poll(self) -> None:
        await self.updates()

    async def idle_done(self, line: bytes) -> None:
        tag, self._idle_tag = self._idle_tag or "*", None
        if line.strip().upper() != b"DONE":
            await self._bad(tag, "expected DONE to end IDLE")
            return
        await self.updates()
        await self.ok(tag, "IDLE terminated")

    async def deselect(self) -> None:
        """Leave the selected state (back to authenticated) and release the folder."""
        sel, self.selected = self.selected, None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        if sel is not None:
            await asyncio.to_thread(sel.close)

    async def close(self) -> None:
        """The connection is going away."""
        await self.deselect()
        store, self.store = self.store, None
        if store is not None and hasattr(store, "close"):
            await asyncio.to_thread(store.close)
