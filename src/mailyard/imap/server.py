"""The IMAP listeners (`imap` with STARTTLS, `imaps` with implicit TLS): a thin asyncio shell.

Theory of operation: one `Connection` per socket owns the transport concerns only — reading
with the idle timeout, the command framer and its limits (proto/framing.py), `+ go ahead`
continuations, STARTTLS (plaintext still buffered when TLS starts is discarded, so nothing
injected before the handshake is ever executed), COMPRESS=DEFLATE (RFC 4978), AUTHENTICATE
continuation lines and IDLE's wait for changes or DONE. Everything IMAP means lives in
`ImapSession`. Failed logins are counted per client IP in a process-wide `LoginThrottle`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import time
import zlib

from mailyard.imap import responses as r
from mailyard.imap.idlewatch import IdlePoller
from mailyard.imap.proto.framing import NEED_DATA, CommandFramer, Continuation, RawCommand, Refusal
from mailyard.imap.session import Directive, ImapSession, SessionContext
from mailyard.log import event, get_logger
from mailyard.server.listen import Listener, serve_stream

log = get_logger("imap")
READ_SIZE = 65536
PRE_AUTH_MAX_LITERAL = 8192   # before login a literal can only be a user name or password
IDLE_REFRESH = 60.0   # a safety refresh during IDLE even without any notification


class LoginThrottle:
    """Per-client-IP failed login counter: after `free` failures each further failure is held
    back 1, 2, 4... seconds (at most `max_delay`); forgotten after 15 quiet minutes."""

    WINDOW = 900.0

    def __init__(self, free: int, max_delay: float):
        self.free = free
        self.max_delay = max_delay
        self.failures: dict[str, tuple[int, float]] = {}

    def delay_for(self, ip: str) -> float:
        count, last = self.failures.get(ip, (0, 0.0))
        if time.monotonic() - last > self.WINDOW:
            return 0.0
        over = count - self.free
        return 0.0 if over < 0 else min(self.max_delay, float(2 ** min(over, 10)))

    async def failed(self, ip: str) -> None:
        count, last = self.failures.get(ip, (0, 0.0))
        if time.monotonic() - last > self.WINDOW:
            count = 0
        self.failures[ip] = (count + 1, time.monotonic())
        if len(self.failures) > 100000:   # bounded memory under a distributed attack
            self.failures.clear()
        delay = self.delay_for(ip)
        if delay:
            await asyncio.sleep(delay)


class AuthCache:
    """Successful logins remembered for `ttl` seconds under an HMAC of (login, password)
    with a per-process random key: nothing reusable is kept, and argon2 runs once per
    client per `ttl` instead of once per connection (Dovecot's auth_cache, in spirit)."""

    MAX_ENTRIES = 50000

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._key = os.urandom(32)
        self._entries: dict[bytes, tuple[str, float]] = {}

    def _digest(self, login: str, password: str) -> bytes:
        return hmac.new(self._key, login.encode() + b"\0" + password.encode(),
                        hashlib.sha256).digest()

    def get(self, login: str, password: str) -> str | None:
        if self.ttl <= 0:
            return None
        hit = self._entries.get(self._digest(login, password))
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, login: str, password: str, user: str) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            self._entries.clear()
        self._entries[self._digest(login, password)] = (user, time.monotonic() + self.ttl)


class Transport:
    """Reads and writes bytes, optionally through DEFLATE (RFC 4978)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self._inflate = None
        self._deflate = None

    def start_compression(self) -> None:
        self._inflate = zlib.decompressobj(-15)
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)

    async def read(self) -> bytes:
        """The next bytes from the client (inflated when compressing); b"" at EOF."""
        inflate = self._inflate
        while True:
            if inflate is not None and inflate.unconsumed_tail:
                out = inflate.decompress(inflate.unconsumed_tail, READ_SIZE)
                if out:
                    return out
                continue
            data = await self.reader.read(READ_SIZE)
            if not data or inflate is None:
                return data
            out = inflate.decompress(data, READ_SIZE)   # bounded output: no inflate bomb
            if out:
                return out

    async def write(self, data: bytes | list[bytes]) -> None:
        """Send bytes, or a list of byte strings (FETCH batches: written without joining
        them first, so message bodies are not copied once more)."""
        if self._deflate is not None:
            if isinstance(data, list):
                data = b"".join(data)
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        if isinstance(data, list):
            writelines = getattr(self.writer, "writelines", None)
            if writelines is not None:
                writelines(data)
            else:
                self.writer.write(b"".join(data))
        else:
            self.writer.write(data)
        await self.writer.drain()


class Connection:
    """One client connection around one ImapSession."""

    def __init__(self, app, reader, writer, implicit_tls: bool, throttle: LoginThrottle,
                 poller: IdlePoller | None = None):
        self.app = app
        self.poller = poller
        self.settings = app.settings.imap
        self.io = Transport(reader, writer)
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else "local"
        self.throttle = throttle
        self.framer = self._new_framer()
        ctx = SessionContext(
            authenticate=self._authenticate,
            open_store=self._open_store,
            client_ip=self.client_ip,
            tls=implicit_tls,
            starttls_available=not implicit_tls,
            plaintext_login=self._plaintext_allowed(),
            max_errors=self.settings.max_bad_commands,
            max_append=self.settings.max_literal_size,
            spam_learn_dir=app.data_path / "spam-learn",
            hostname=app.settings.server.hostname,
            on_auth_failure=throttle.failed,
        )
        self.session = ImapSession(ctx, self.io.write)

    def _new_framer(self) -> CommandFramer:
        framer = CommandFramer(self.settings.max_command_size, self.settings.max_literal_size)
        framer.max_literal = min(framer.max_literal, PRE_AUTH_MAX_LITERAL)
        return framer

    def _plaintext_allowed(self) -> bool:
        try:
            ip = ipaddress.ip_address(self.client_ip)
        except ValueError:
            return True   # unix socket: local
        for net in self.settings.plaintext_auth_networks:
            if ip in ipaddress.ip_network(net, strict=False):
                return True
        return False

    async def _authenticate(self, login: str, password: str) -> str | None:
        cache = self.app.component("imap.authcache",
                                   lambda a: AuthCache(a.settings.imap.auth_cache_ttl))
        user = cache.get(login, password)
        if user is None:
            user = await asyncio.to_thread(self.app.accounts.authenticate, login, password)
            if user is not None:
                cache.put(login, password, user)
        return user

    def _open_store(self, user: str):
        from mailyard.maildir import MailStore

        return MailStore(self.app.accounts.maildir_path(user))

    async def _fill(self) -> bool:
        """Read more bytes into the framer; False at EOF or idle timeout."""
        try:
            data = await asyncio.wait_for(self.io.read(), self.settings.idle_timeout)
        except TimeoutError:
            await self.io.write(r.untagged("BYE autologout; idle for too long"))
            return False
        if not data:
            return False
        self.framer.feed(data)
        return True

    async def run(self) -> None:
        started = time.monotonic()
        await self.io.write(self.session.greeting())
        commands = 0
        try:
            while True:
                ev = self.framer.next_event()
                if ev is NEED_DATA:
                    if not await self._fill():
                        return
                    continue
                if isinstance(ev, Continuation):
                    await self.io.write(b"+ go ahead\r\n")
                    continue
                if isinstance(ev, Refusal):
                    if ev.fatal:
                        await self.io.write(r.untagged(f"BYE {ev.text}"))
                        return
                    await self.io.write(r.tagged(ev.tag, r.NO, ev.text))
                    continue
                assert isinstance(ev, RawCommand)
                commands += 1
                directive = await self.session.handle(ev.data)
                if self.session.user is not None:
                    # only an authenticated user may send big literals (APPEND)
                    self.framer.max_literal = self.settings.max_literal_size
                if directive is None:
                    continue
                if directive in (Directive.LOGOUT, Directive.CLOSE):
                    return
                if not await self._directive(directive):
                    return
        finally:
            await self.session.close()
            event(log, "session end", client=self.client_ip, user=self.session.user,
                  commands=commands, seconds=round(time.monotonic() - started, 3))

    async def _directive(self, directive: Directive) -> bool:
        if directive is Directive.STARTTLS:
            # RFC 3501 §6.2.1 / CVE-2011-0411-style injection: drop what came in plaintext.
            self.framer = self._new_framer()
            await self.io.writer.start_tls(self.app.tls_server_context())
            self.session.tls_started()
            self.session.ctx.plaintext_login = True
            return True
        if directive is Directive.COMPRESS:
            self.io.start_compression()
            if self.framer.buffered:
                # Bytes after the COMPRESS command were already compressed; re-inflate them.
                pending = bytes(self.framer._buf)
                self.framer._buf.clear()
                self.framer.feed(self.io._inflate.decompress(pending, READ_SIZE))
            return True
        if directive is Directive.AUTH_CONTINUE:
            await self.io.write(b"+ \r\n")
            line = await self._line()
            if line is None:
                return False
            result = await self.session.auth_response(line)
            return result not in (Directive.CLOSE, Directive.LOGOUT)
        if directive is Directive.IDLE:
            return await self._idle()
        return True

    async def _line(self) -> bytes | None:
        while True:
            line = self.framer.next_line()
            if line is not NEED_DATA:
                return line
            if not await self._fill():
                return None

    async def _idle(self) -> bool:
        """RFC 2177: report changes as they happen until the client sends DONE."""
        sel = self.session.selected
        watch = sel.folder.watch() if sel is not None else None
        polled = None
        if sel is not None and self.poller is not None:
            polled = self.poller.register(sel.folder.path_dir)
        deadline = time.monotonic() + self.settings.idle_timeout
        # Anything that changed between our "+ idling" and the watch starting would
        # otherwise wait for the next change or the safety refresh: look once now.
        await self.session.idle_poll()
        reader = asyncio.ensure_future(self.io.read())
        try:
            while True:
                line = self.framer.next_line()
                if line is not NEED_DATA:
                    await self.session.idle_done(line)
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self.io.write(r.untagged("BYE autologout; idled too long"))
                    return False
                waiter = asyncio.ensure_future(
                    watch.wait(IDLE_REFRESH) if watch is not None
                    else asyncio.sleep(IDLE_REFRESH))
                done, _ = await asyncio.wait({reader, waiter}, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
                if reader in done:
                    waiter.cancel()
                    data = reader.result()
                    if not data:
                        return False
                    self.framer.feed(data)
                    reader = asyncio.ensure_future(self.io.read())
                    continue
                if waiter in done:
                    await self.session.idle_poll()
                else:
                    waiter.cancel()
        finally:
            reader.cancel()
            if watch is not None:
                watch.close()
            if polled is not None:
                self.poller.unregister(polled)


async def start(app, service: str, address: str) -> Listener:
    """Start function for the `imap` (STARTTLS) and `imaps` (implicit TLS) services."""
    implicit = service == "imaps"
    settings = app.settings.imap
    # APPEND, like delivery, precomputes ENVELOPE/BODYSTRUCTURE (first FETCH is a cache hit).
    from mailyard.imap.ops.fetch import cache_builder
    from mailyard.maildir import register_cache_builder

    register_cache_builder(cache_builder)
    throttle = app.component("imap.throttle", lambda a: LoginThrottle(
        settings.auth_failures_free, settings.auth_failure_max_delay))
    poller = app.component("imap.idle", lambda a: IdlePoller())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(app, reader, writer, implicit, throttle, poller).run()

    return await serve_stream(app, service, address, handle,
                              ssl=app.tls_server_context() if implicit else None)
