"""Stream listeners with connection tracking, so SIGTERM can drain them.

`serve_stream(app, service, address, handler)` binds HOST:PORT (or unix:/path), runs
`handler(reader, writer)` per connection, always closes the writer afterwards, logs one line
per listener, and returns a `Listener` whose `close()` stops accepting and whose `drain()`
waits for the open connections (then cancels the stragglers).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl as ssl_mod
from collections.abc import Awaitable, Callable

from mailyard.config import ConfigError, parse_hostport
from mailyard.log import event, get_logger

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
log = get_logger("server")

# Big enough for a long SMTP/IMAP line; protocol cores enforce their own limits.
STREAM_LIMIT = 1 << 20


class Listener:
    """One bound listening socket and the connections it has accepted."""

    def __init__(self, service: str, address: str, server: asyncio.base_events.Server):
        self.service = service
        self.address = address
        self.server = server
        self.connections: set[asyncio.Task] = set()

    @property
    def sockname(self):
        return self.server.sockets[0].getsockname() if self.server.sockets else None

    def close(self) -> None:
        self.server.close()

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for open connections, then cancel the rest."""
        if self.connections:
            _, pending = await asyncio.wait(set(self.connections), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), timeout=1.0)


async def serve_stream(app, service: str, address: str, handler: Handler, *,
                       ssl: ssl_mod.SSLContext | None = None,
                       placeholder: bool = False) -> Listener:
    """Bind `address` for `service` and serve `handler` on each connection.

    A port already in use (or any bind error) raises ConfigError naming `listen.SERVICE`.
    """
    holder: dict[str, Listener] = {}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        listener = holder["listener"]
        listener.connections.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl_mod.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in one session must not take the listener down
            log.exception("%s: session crashed", service)
        finally:
            listener.connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2.0)

    key = f"listen.{service}"
    source = app.settings.source or "<defaults>"
    try:
        host, port = parse_hostport(address)
    except ValueError as exc:
        raise ConfigError(str(exc), file=source, key=key) from None
    try:
        if host.startswith("unix:"):
            path = host[5:]
            with contextlib.suppress(FileNotFoundError):
                if os.path.exists(path) and not _socket_alive(path):
                    os.unlink(path)
            server = await asyncio.start_unix_server(on_connect, path=path, ssl=ssl,
                                                     limit=STREAM_LIMIT)
        else:
            server = await asyncio.start_server(on_connect, host=host, port=port, ssl=ssl,
                                                limit=STREAM_LIMIT, reuse_address=True,
                                                backlog=1024)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = f"{address} is already in use"
        elif exc.errno == errno.EACCES:
            reason = f"{address}: permission denied (ports below 1024 need root)"
        elif exc.errno == errno.EADDRNOTAVAIL:
            reason = f"{address}: no such local address"
        else:
            reason = f"{address}: cannot listen: {exc.strerror or exc}"
        raise ConfigError(reason, file=source, key=key) from None
    listener = Listener(service, address, server)
    holder["listener"] = listener
    bound = listener.sockname
    event(log, "listening", service=service, address=address,
          bound=f"{bound[0]}:{bound[1]}" if isinstance(bound, tuple) else bound,
          tls="implicit" if ssl else None,
          status="placeholder: refuses politely until its package lands" if placeholder
          else None)
    return listener


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False
