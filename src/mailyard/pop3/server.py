"""The POP3 listeners: `pop3` (port 110, STLS) and `pop3s` (port 995, implicit TLS).

This layer owns only the socket: reading with the idle timeout, writing with back-pressure,
the TLS handshake, the login throttle and the calls that block (password hashing, directory
scans, expunge) moved off the event loop. Everything the client says goes through
`proto.ServerProtocol`; everything done to the mailbox goes through `session.Maildrop`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time

from mailyard.log import event, get_logger
from mailyard.pop3 import proto, session
from mailyard.pop3.proto import (
    CLOSED,
    NEED_DATA,
    Login,
    Quit,
    Retr,
    ServerProtocol,
    Stls,
    TooManyErrors,
    Top,
)
from mailyard.server.listen import Listener, serve_stream

log = get_logger("pop3")
READ_CHUNK = 65536
WRITE_HIGH_WATER = 1 << 20


def plaintext_allowed(policy: str, client_ip: str, tls_active: bool) -> bool:
    """May credentials travel in the clear here? (`[pop3] plaintext_auth`, RFC 2595 §2.1)."""
    if tls_active or policy == "always":
        return True
    if policy == "never":
        return False
    if not client_ip:  # a unix socket peer is on this machine
        return True
    try:
        return ipaddress.ip_address(client_ip).is_loopback
    except ValueError:
        return False


class LoginThrottle:
    """Failed logins per client IP in a sliding window: a growing delay, then refusal."""

    def __init__(self, limit: int, window: float, base_delay: float, max_ips: int = 100_000):
        self.limit = limit
        self.window = window
        self.base_delay = base_delay
        self.max_ips = max_ips
        self._failures: dict[str, collections.deque] = {}

    def _recent(self, ip: str, now: float) -> collections.deque | None:
        times = self._failures.get(ip)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[ip]
            return None
        return times

    def blocked(self, ip: str) -> bool:
        times = self._recent(ip, time.monotonic())
        return times is not None and len(times) >= self.limit

    def failed(self, ip: str) -> float:
        """Record a failure; return the seconds to hold back the answer."""
        now = time.monotonic()
        times = self._recent(ip, now)
        if times is None:
            if len(self._failures) >= self.max_ips:
                self._failures.pop(next(iter(self._failures)))
            times = self._failures[ip] = collections.deque()
        times.append(now)
        return min(self.base_delay * 2 ** (len(times) - 1), 30.0)


class Pop3Service:
    """What the pop3 and pop3s listeners of one process share."""

    def __init__(self, app):
        settings = app.settings.pop3
        self.app = app
        self.settings = settings
        self.lock_dir = app.data_path / "run" / "pop3"
        self.throttle = LoginThrottle(settings.ip_failure_limit, settings.ip_failure_window,
                                      settings.auth_failure_delay)

    def open_maildrop(self, user: str) -> session.Maildrop:
        from mailyard.maildir import MailStore

        store = MailStore(self.app.accounts.maildir_path(user))
        drop = session.Maildrop(store.open("INBOX"))
        drop.load()
        return drop


async def start(app, service: str, address: str) -> Listener:
    pop3 = app.component("pop3", Pop3Service)
    implicit = service == "pop3s"
    ctx = app.tls_server_context()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Connection(pop3, reader, writer, ctx, implicit).run()

    return await serve_stream(app, service, address, handler, ssl=ctx if implicit else None)


class IdleTimeout(TimeoutError):
    """The client said nothing for `[pop3] idle_timeout` seconds."""


class Connection:
    """One client connection: the read/dispatch/write loop around a `ServerProtocol`."""

    def __init__(self, service: Pop3Service, reader, writer, tls_context, implicit_tls: bool):
        self.service = service
        self.reader = reader
        self.writer = writer
        self.tls_context = tls_context
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        cfg = service.settings
        self.proto = ServerProtocol(
            max_line=cfg.max_line_length, max_bad_commands=cfg.max_bad_commands,
            tls_active=implicit_tls, tls_available=not implicit_tls,
            plaintext_allowed=plaintext_allowed(cfg.plaintext_auth, self.client_ip,
                                                implicit_tls))
        self.user: str | None = None
        self.drop: session.Maildrop | None = None
        self.lock: session.MailboxLock | None = None
        self.auth_failures = 0
        self.retrieved = 0
        self.deleted = 0
        self.end = "disconnect"
        self._waiting_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.service.settings.idle_timeout, self._check_idle)
        try:
            await self._loop()
        finally:
            self._idle_timer.cancel()
            if self.lock is not None:
                self.lock.release()
            event(log, "session", client=self.client_ip or "local", user=self.user,
                  tls=self.proto.tls_active, retrieved=self.retrieved, deleted=self.deleted,
                  end=self.end)

    def _check_idle(self) -> None:
        """The idle watchdog: one timer per connection, not one per command (RFC 1939 §3).

        The session is idle while `_loop` waits for the client; `_waiting_since` is when
        that wait began (None while the server is working). After `idle_timeout` seconds of
        waiting the read is failed with `IdleTimeout`; otherwise the timer is set again for
        the moment the current wait would expire.
        """
        loop = asyncio.get_running_loop()
        idle = self.service.settings.idle_timeout
        since = self._waiting_since
        now = loop.time()
        if since is not None and now - since >= idle:
            self.reader.set_exception(IdleTimeout())
            return
        delay = idle if since is None else idle - (now - since)
        self._idle_timer = loop.call_later(delay, self._check_idle)

    async def _flush(self, drain: bool) -> None:
        chunks = self.proto.chunks_to_send()
        if chunks:
            self.writer.writelines(chunks)
        if drain or self.writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            await self.writer.drain()

    async def _loop(self) -> None:
        p, writer = self.proto, self.writer
        loop = asyncio.get_running_loop()
        while True:
            ev = p.next_event()
            if ev is NEED_DATA:
                # The hot path of a download: no coroutine call and no drain when the
                # transport took everything, and the idle timer is the watchdog's.
                chunks = p.chunks_to_send()
                if chunks:
                    writer.writelines(chunks)
                if writer.transport.get_write_buffer_size():
                    await writer.drain()
                self._waiting_since = loop.time()
                try:
                    data = await self.reader.read(READ_CHUNK)
                except IdleTimeout:
                    # RFC 1939 §3: autologout without entering UPDATE.
                    p.err(proto.REPLY_IDLE)
                    self.end = "idle timeout"
                    # No drain (it would re-raise the reader's exception): closing the
                    # writer afterwards sends what is buffered.
                    writer.writelines(p.chunks_to_send())
                    return
                finally:
                    self._waiting_since = None
                if not data:
                    return
                p.receive_data(data)
                continue
            if ev is CLOSED:
                await self._flush(drain=True)
                return
            if isinstance(ev, Retr):
                if not self._retr_read_ahead(ev):
                    await self._retrieve(ev)
                # The answer leaves first; then, while the client reads it, the next
                # message is put in wire form (session.Maildrop.prefetch).
                writer.writelines(p.chunks_to_send())
                if writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                    await writer.drain()
                self.drop.prefetch(ev.number + 1)
                continue
            if isinstance(ev, Top):
                await self._retrieve(ev)
            elif isinstance(ev, Login):
                if await self._login(ev):
                    await self._flush(drain=True)
                    return
            elif isinstance(ev, Stls):
                await self._flush(drain=True)
                await self.writer.start_tls(self.tls_context)
                p.tls_started()
                p.plaintext_allowed = True
            elif isinstance(ev, Quit):
                await self._quit()
                await self._flush(drain=True)
                return
            elif isinstance(ev, TooManyErrors):
                self.end = "too many bad commands"
                await self._flush(drain=True)
                return
            else:
                session.answer(p, self.drop, ev)
            await self._flush(drain=False)

    async def _login(self, ev: Login) -> bool:
        """Check credentials and open the maildrop; True when the session must end."""
        p, svc = self.proto, self.service
        if svc.throttle.blocked(self.client_ip):
            p.err(proto.REPLY_THROTTLED, proto.CODE_SYS_TEMP)
            self.end = "throttled"
            return True
        user = await asyncio.to_thread(svc.app.accounts.authenticate, ev.login, ev.password)
        if user is not None and ev.authzid and ev.authzid not in (ev.login, user):
            user = None  # RFC 4616 §2: we do not let one user act as another
        if user is None:
            self.auth_failures += 1
            delay = svc.throttle.failed(self.client_ip)
            event(log, "login failed", client=self.client_ip or "local", login=ev.login,
                  mechanism=ev.mechanism)
            await asyncio.sleep(delay)
            p.login_failed()
            if self.auth_failures >= svc.settings.max_auth_failures:
                self.end = "too many failed logins"
                return True
            return False
        lock = session.MailboxLock(svc.lock_dir, user)
        if not lock.acquire():
            p.err(proto.REPLY_IN_USE, proto.CODE_IN_USE)
            return False
        try:
            self.drop = await asyncio.to_thread(svc.open_maildrop, user)
        except Exception:
            lock.release()
            log.exception("cannot open the maildrop of %s", user)
            p.err(proto.REPLY_TEMPFAIL, proto.CODE_SYS_TEMP)
            return False
        self.lock, self.user = lock, user
        p.login_succeeded()
        return False

    def _retr_read_ahead(self, ev: Retr) -> bool:
        """Answer RETR from the read-ahead if it holds the message unchanged (no await)."""
        drop = self.drop
        try:
            message = drop.get(ev.number)
        except session.DropError:
            return False  # _retrieve answers -ERR
        body = drop.take_ahead(ev.number)
        if body is None:
            return False
        self.proto.multiline(f"{message.size} octets", body)
        self.retrieved += 1
        return True

    async def _retrieve(self, ev: Retr | Top) -> None:
        p, drop = self.proto, self.drop
        try:
            message = drop.get(ev.number)
        except session.DropError as exc:
            p.err(str(exc))
            return
        try:
            if message.size > session.LARGE_MESSAGE:
                raw = await asyncio.to_thread(drop.read, ev.number)
            else:
                raw = drop.read(ev.number)
        except (LookupError, OSError):
            # Expunged meanwhile over IMAP (the store's MessageGone is a LookupError).
            p.err("Message was removed by another session.", proto.CODE_SYS_PERM)
            return
        session.retrieve(p, drop, ev, raw)
        if isinstance(ev, Retr):
            self.retrieved += 1

    async def _quit(self) -> None:
        p = self.proto
        if self.drop is None:
            p.ok(proto.REPLY_BYE)
            self.end = "quit"
            return
        try:
            self.deleted = await asyncio.to_thread(self.drop.commit)
        except Exception:
            log.exception("UPDATE failed for %s", self.user)
            # RFC 1939 §6: -ERR when some marked messages could not be removed.
            p.err("Some deleted messages could not be removed.", proto.CODE_SYS_TEMP)
            self.end = "update failed"
            return
        p.ok(f"{proto.REPLY_BYE} ({self.deleted} messages deleted)")
        self.end = "quit"
