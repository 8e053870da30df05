"""The asyncio ManageSieve listener (`[listen] managesieve`): a thin loop around `Session`.

It owns only the socket: reading with an idle timeout, writing, the TLS upgrade, and running
the password check in a thread (`app.accounts.authenticate` is CPU-heavy).
"""

from __future__ import annotations

import asyncio
import ipaddress

from mailyard.log import event, get_logger
from mailyard.server.listen import serve_stream
from mailyard.sieve.managesieve.session import (
    Authenticate,
    Close,
    Send,
    Session,
    SessionConfig,
    StartTls,
)
from mailyard.sieve.storage import ScriptStore

log = get_logger("managesieve")
IDLE_TIMEOUT = 1800.0  # RFC 5804 leaves it open; 30 minutes like IMAP's autologout minimum


def _is_loopback(peer) -> bool:
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except (TypeError, ValueError, IndexError):
        return isinstance(peer, str) or peer is None  # unix socket: local


async def handle(app, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    settings = app.settings
    peer = writer.get_extra_info("peername")
    try:
        app.tls_server_context()
        tls_available = True
    except Exception:  # noqa: BLE001 — no certificate: STARTTLS is simply not offered
        tls_available = False
    config = SessionConfig(tls_available=tls_available,
                           plaintext_allowed=_is_loopback(peer),
                           max_redirects=settings.sieve.max_redirects,
                           max_literal=settings.sieve.max_script_size + 4096)

    def store_factory(user: str) -> ScriptStore:
        return ScriptStore(app.data_path, user, max_scripts=settings.sieve.max_scripts,
                           max_script_size=settings.sieve.max_script_size)

    session = Session(config, store_factory)
    writer.write(session.greeting())
    await writer.drain()
    user_logged = None
    try:
        while not session.closed:
            try:
                data = await asyncio.wait_for(reader.read(65536), IDLE_TIMEOUT)
            except TimeoutError:
                writer.write(b'BYE "Idle timeout."\r\n')
                break
            if not data:
                break
            pending = session.receive_data(data)
            while pending:
                ev = pending.pop(0)
                if isinstance(ev, Send):
                    writer.write(ev.data)
                elif isinstance(ev, Close):
                    break
                elif isinstance(ev, StartTls):
                    await writer.drain()
                    # Plaintext that arrived after STARTTLS must not be read as if it came
                    # through TLS (command injection, cf. CVE-2011-0411).
                    buffered = getattr(reader, "_buffer", None)
                    if buffered:
                        buffered.clear()
                    await writer.start_tls(app.tls_server_context())
                    pending = session.tls_started() + pending
                elif isinstance(ev, Authenticate):
                    await writer.drain()
                    try:
                        user = await asyncio.to_thread(app.accounts.authenticate, ev.login,
                                                       ev.password)
                    except Exception:  # the account store failed, not the password
                        log.exception("managesieve: authentication backend failed")
                        pending = session.auth_unavailable() + pending
                        continue
                    event(log, "auth", peer=str(peer), login=ev.login, ok=user is not None)
                    if user is not None:
                        user_logged = user
                    pending = session.auth_result(user) + pending
            await writer.drain()
    finally:
        event(log, "session", peer=str(peer), user=user_logged or "-")


async def start(app, service: str, address: str):
    async def handler(reader, writer):
        await handle(app, reader, writer)

    return await serve_stream(app, service, address, handler)
