"""The MTA's listeners: smtp (25), submission (587), submissions (465), reinject (10025).

`start(app, service, address)` is registered for all four in `server/services.py`. They
share one `Mta` (`app.component("mta")`): the RCPT policy (accounts, DNSBL, greylist), the
queue hand-off, and TLS. Each listener counts connections per client IP and refuses the
excess with 421 4.7.0 before any protocol work.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from mailyard.config.loader import is_trusted
from mailyard.log import event, get_logger
from mailyard.mta.dnsbl import DnsblChecker
from mailyard.mta.greylist import Greylist
from mailyard.mta.policy import RecipientPolicy
from mailyard.mta.profiles import PROFILES
from mailyard.mta.session import Session
from mailyard.server.listen import Listener, serve_dispatched, serve_stream
from mailyard.smtp import replies
from mailyard.smtp.replies import format_reply

log = get_logger("mta")


class Mta:
    """What every MTA session shares within one process."""

    def __init__(self, app):
        self.app = app
        self._greylist: Greylist | None = None
        self._policy: RecipientPolicy | None = None
        self.sessions: set[Session] = set()
        app.on_reload(self._reload)
        app.on_shutdown(self._shutdown)

    async def _shutdown(self) -> None:
        """Idle clients get a 421 at once, so draining waits only for messages in flight."""
        closed = sum(session.close_if_idle() for session in list(self.sessions))
        if closed:
            event(log, "closed idle sessions for shutdown", sessions=closed)

    @property
    def settings(self):
        return self.app.settings

    @property
    def accounts(self):
        return self.app.accounts

    @property
    def policy(self) -> RecipientPolicy:
        if self._policy is None:
            settings = self.settings
            if self._greylist is None and settings.greylist.enabled:
                self._greylist = Greylist.from_settings(settings)
            dnsbl = DnsblChecker(settings.dnsbl.zones, self.app.dns, settings.dnsbl.timeout) \
                if settings.dnsbl.zones else None
            self._policy = RecipientPolicy(settings, self.accounts, dnsbl, self._greylist)
        return self._policy

    def _reload(self, settings) -> None:
        # Sessions may be inside a greylist check right now: keep the store open, change
        # only its timings; the policy is rebuilt from the new settings on next use.
        if self._greylist is not None:
            g = settings.greylist
            self._greylist.min_delay = g.min_delay
            self._greylist.retry_window = g.retry_window
            self._greylist.auto_allowlist = g.auto_allowlist
            self._greylist.max_age = g.max_age
        self._policy = None

    def queue(self):
        from mailyard.queue import Queue

        return self.app.component("queue", lambda app: Queue(app))

    @property
    def tls_available(self) -> bool:
        try:
            self.tls_context()
            return True
        except Exception:  # noqa: BLE001 - no usable certificate: do not offer STARTTLS
            return False

    def tls_context(self):
        return self.app.tls_server_context()

    def close(self) -> None:
        if self._greylist is not None:
            self._greylist.close()


def _client_ip(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and peer:
        return str(peer[0]).split("%", 1)[0]
    return "127.0.0.1"   # a unix socket is local


def connection_handler(app, mta: Mta, service: str, per_ip: Counter[str] | None):
    """The per-connection coroutine of one MTA listener. `per_ip` counts this listener's
    connections per client IP (421 beyond the limit); None in an accepting worker, whose
    connections the main process has counted already (`mta.workers`)."""
    profile = PROFILES[service]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ip = _client_ip(writer)
        if per_ip is not None:
            per_ip[ip] += 1
        try:
            if per_ip is not None and per_ip[ip] > app.settings.smtp.max_connections_per_ip:
                event(log, "too many connections", service=service, client=ip,
                      count=per_ip[ip])
                reply = replies.TOO_MANY_CONNECTIONS
                writer.write(format_reply(reply.code, reply.enhanced, reply.text))
                await writer.drain()
                return
            session = Session(mta, profile, reader, writer, ip, is_trusted(app.settings, ip))
            mta.sessions.add(session)
            try:
                await session.run()
            finally:
                mta.sessions.discard(session)
        finally:
            if per_ip is not None:
                per_ip[ip] -= 1
                if per_ip[ip] <= 0:
                    del per_ip[ip]

    return handle


def tls_for(app, service: str):
    return app.tls_server_context() if PROFILES[service].implicit_tls else None


async def start(app, service: str, address: str) -> Listener:
    mta: Mta = app.component("mta", Mta)
    # Resume committed queue entries at start-up, not at the first message; have queue
    # files ready before the first client (made ahead, see queue.incoming).
    with contextlib.suppress(ImportError):
        await mta.queue().start()
        mta.queue().stock.fill()
    per_ip: Counter[str] = Counter()
    handle = connection_handler(app, mta, service, per_ip)
    tls = tls_for(app, service)
    if not address.startswith("unix:"):
        from mailyard.mta.workers import AcceptPool, process_count

        if process_count(app.settings) > 1:
            pool: AcceptPool = app.component("accept_pool", AcceptPool)
            pool.start()
            return await serve_dispatched(
                app, service, address,
                lambda listener, conn, peer: pool.dispatch(service, listener, conn, peer,
                                                           per_ip, handle, tls))
    return await serve_stream(app, service, address, handle, ssl=tls)
