"""Stream listeners with connection tracking, so SIGTERM can drain them.

`serve_stream(app, service, address, handler)` binds HOST:PORT (or unix:/path), runs
`handler(reader, writer)` per connection, always closes the writer afterwards, logs one line
per listener, and returns a `Listener` whose `close()` stops accepting and whose `drain()`
waits for the open connections (then cancels the stragglers).

`serve_protocol(app, service, address, factory)` is the same for a service that answers in
`asyncio.Protocol` callbacks (no task and no StreamReader wake-up per command; POP3 does):
each connection's protocol is a `TrackedProtocol`, whose `finished` future the listener waits
for, and cancelling it aborts the connection.
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
    """One bound listening socket and the connections it has accepted.

    `connections` holds one future per open connection: the task of a stream handler, or a
    `TrackedProtocol`'s `finished` future; cancelling it ends the connection.
    """

    def __init__(self, service: str, address: str, server):
        self.service = service
        self.address = address
        self.server = server
        self.connections: set[asyncio.Future] = set()

    @property
    def sockname(self):
        return self.server.sockets[0].getsockname() if self.server.sockets else None

    def close(self) -> None:
        self.server.close()

    async def run_connection(self, handler: Handler, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        """Run `handler` on one connection, tracked for `drain`; always close the writer."""
        task = asyncio.current_task()
        self.connections.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl_mod.SSLError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug in one session must not take the listener down
            log.exception("%s: session crashed", self.service)
        finally:
            self.connections.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout=2.0)

    async def serve_socket(self, sock: socket.socket, handler: Handler,
                           ssl: ssl_mod.SSLContext | None = None) -> bool:
        """Serve a connection accepted elsewhere (by a dispatching listener, or by another
        process that passed it over) as if this listener had accepted it. False when the
        connection failed before `handler` could start (it will not run then)."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT)

        def connected(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Awaitable[None]:
            return self.run_connection(handler, r, w)

        protocol = asyncio.StreamReaderProtocol(reader, connected)
        try:
            await loop.connect_accepted_socket(lambda: protocol, sock, ssl=ssl)
        except (OSError, ssl_mod.SSLError, TimeoutError):
            sock.close()        # the client left, or its TLS handshake failed
            return False
        return True

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
        await holder["listener"].run_connection(handler, reader, writer)

    async def start_unix(path: str) -> asyncio.base_events.Server:
        return await asyncio.start_unix_server(on_connect, path=path, ssl=ssl,
                                               limit=STREAM_LIMIT)

    async def start_tcp(host: str, port: int) -> asyncio.base_events.Server:
        return await asyncio.start_server(on_connect, host=host, port=port, ssl=ssl,
                                          limit=STREAM_LIMIT, reuse_address=True, backlog=1024)

    listener = await _listen(app, service, address, start_unix, start_tcp, ssl, placeholder)
    holder["listener"] = listener
    return listener


class TrackedProtocol(asyncio.Protocol):
    """A protocol served by `serve_protocol`: it sets `finished` once the connection is over
    and everything it started is done; `abort()` ends the connection at once."""

    def __init__(self) -> None:
        self.finished: asyncio.Future = asyncio.get_running_loop().create_future()

    def abort(self) -> None:
        raise NotImplementedError


async def serve_protocol(app, service: str, address: str,
                         factory: Callable[[], TrackedProtocol], *,
                         ssl: ssl_mod.SSLContext | None = None) -> Listener:
    """Bind `address` for `service` and serve a `factory()` protocol on each connection
    (errors as `serve_stream`'s)."""
    # Made before the socket is bound: a connection may be accepted before _listen returns.
    connections: set[asyncio.Future] = set()
    loop = asyncio.get_running_loop()

    def make() -> TrackedProtocol:
        protocol = factory()
        connections.add(protocol.finished)

        def done(fut: asyncio.Future) -> None:
            connections.discard(fut)
            if fut.cancelled():
                protocol.abort()

        protocol.finished.add_done_callback(done)
        return protocol

    async def start_unix(path: str) -> asyncio.base_events.Server:
        return await loop.create_unix_server(make, path=path, ssl=ssl)

    async def start_tcp(host: str, port: int) -> asyncio.base_events.Server:
        return await loop.create_server(make, host=host, port=port, ssl=ssl,
                                        reuse_address=True, backlog=1024)

    listener = await _listen(app, service, address, start_unix, start_tcp, ssl, False)
    listener.connections = connections
    return listener


async def _listen(app, service: str, address: str, start_unix, start_tcp, ssl,
                  placeholder: bool) -> Listener:
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
            server = await start_unix(path)
        else:
            server = await start_tcp(host, port)
    except OSError as exc:
        raise ConfigError(_bind_error(exc, address), file=source, key=key) from None
    listener = Listener(service, address, server)
    bound = listener.sockname
    event(log, "listening", service=service, address=address,
          bound=f"{bound[0]}:{bound[1]}" if isinstance(bound, tuple) else bound,
          tls="implicit" if ssl else None,
          status="placeholder: refuses politely until its package lands" if placeholder
          else None)
    return listener


def _bind_error(exc: OSError, address: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{address} is already in use"
    if exc.errno == errno.EACCES:
        return f"{address}: permission denied (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{address}: no such local address"
    return f"{address}: cannot listen: {exc.strerror or exc}"


class _Acceptor:
    """A listening TCP socket whose connections go to `dispatch(sock, peer)` as accepted
    (the `server` of a dispatching `Listener`: close, sockets, wait_closed)."""

    def __init__(self, sock: socket.socket, dispatch: Callable[[socket.socket, object], None]):
        self.sockets = [sock]
        self._sock = sock
        self._dispatch = dispatch
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        # Everything waiting, like asyncio's own servers (bounded: the backlog refills).
        for _ in range(100):
            try:
                conn, peer = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:      # EMFILE, ECONNABORTED...: log, keep listening
                event(log, "accept failed", error=repr(exc))
                return
            conn.setblocking(False)
            try:
                self._dispatch(conn, peer)
            except Exception:  # noqa: BLE001 - one bad connection must not stop accepting
                log.exception("dispatching a connection failed")
                conn.close()

    def close(self) -> None:
        if self.sockets:
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self.sockets = []

    async def wait_closed(self) -> None:
        return None


async def serve_dispatched(app, service: str, address: str,
                           dispatch: Callable[[Listener, socket.socket, object], None]
                           ) -> Listener:
    """Bind TCP `address` for `service`; hand each accepted socket to
    `dispatch(listener, sock, peer)`, which serves it here (`listener.serve_socket`) or passes
    it to another process. Bind errors raise ConfigError as in `serve_stream`."""
    key = f"listen.{service}"
    source = app.settings.source or "<defaults>"
    try:
        host, port = parse_hostport(address)
        if host.startswith("unix:"):
            raise ValueError(f"{address}: a dispatching listener needs HOST:PORT")
    except ValueError as exc:
        raise ConfigError(str(exc), file=source, key=key) from None
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family = infos[0][0]
        sock = socket.create_server((infos[0][4][0], port), family=family, backlog=1024,
                                    reuse_port=False)
    except OSError as exc:
        raise ConfigError(_bind_error(exc, address), file=source, key=key) from None
    sock.setblocking(False)
    holder: dict[str, Listener] = {}
    listener = Listener(service, address, _Acceptor(
        sock, lambda conn, peer: dispatch(holder["listener"], conn, peer)))
    holder["listener"] = listener
    bound = listener.sockname
    event(log, "listening", service=service, address=address, bound=f"{bound[0]}:{bound[1]}")
    return listener


def _socket_alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False
