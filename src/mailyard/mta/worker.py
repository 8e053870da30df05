"""An accepting worker process: runs the SMTP sessions the main process passes to it.

Started by `mta.workers.AcceptPool` as `python -m mailyard.mta.worker INDEX FD`, with the
settings pickled on stdin and FD its end of the SOCK_SEQPACKET channel (see `mta.workers`
for the protocol and the crash rules). It serves no listening socket of its own; its queue
is not the spool's scheduler (the main process holds queue/lock), so each commit is
announced over the channel instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import sys

from mailyard.log import event, get_logger

log = get_logger("mta")

MTA_SERVICES = ("smtp", "submission", "submissions", "reinject")
ANNOUNCE_LIMIT = 64 * 1024      # one channel packet; larger messages are read from the spool


class _NoServer:
    """The `server` of a worker's `Listener`: connections arrive over the channel."""

    sockets: list = []

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        return None


async def serve(settings, index: int, channel: socket.socket) -> None:
    from mailyard.mta.listener import Mta, connection_handler, tls_for
    from mailyard.server.app import App
    from mailyard.server.listen import Listener

    loop = asyncio.get_running_loop()
    app = App(settings)
    mta: Mta = app.component("mta", Mta)
    queue = mta.queue()

    def announce(entry, message: bytes | None) -> bool:
        record = entry.to_json()
        packet = f"Q {entry.queue_id} {len(record)}\n".encode() + record
        if len(packet) > ANNOUNCE_LIMIT:            # thousands of recipients
            packet = f"Q {entry.queue_id}\n".encode()
        elif message is not None and len(packet) + len(message) <= ANNOUNCE_LIMIT:
            packet += message           # saves the main process reading the file back
        try:
            channel.send(packet)
            return True
        except OSError:
            return False        # the caller falls back to control/new

    queue.announce = announce
    await queue.start()
    queue.stock.fill()
    listeners: dict[str, Listener] = {}
    handlers = {}
    for service in MTA_SERVICES:
        address = getattr(settings.listen, service)
        if address:
            listeners[service] = Listener(service, address, _NoServer())
            handlers[service] = connection_handler(app, mta, service, None)
    app.listeners = list(listeners.values())
    tasks: set[asyncio.Task] = set()

    async def run(conn_id: str, service: str, sock: socket.socket) -> None:
        handle = handlers[service]

        async def ended(reader, writer) -> None:
            try:
                await handle(reader, writer)
            finally:
                _tell(channel, f"E {conn_id}")

        try:
            if not await listeners[service].serve_socket(sock, ended, tls_for(app, service)):
                _tell(channel, f"E {conn_id}")
        except Exception:  # noqa: BLE001 - keep serving the others
            log.exception("serving a passed connection failed")
            _tell(channel, f"E {conn_id}")

    def on_readable() -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(channel, 256, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message:
                # The main process is gone (it keeps the channel open until we exit): go
                # at once, as if killed with it, so its successor recovers a quiet spool.
                os._exit(1)
            kind, conn_id, service = (message.decode("ascii", "replace").split(" ") + ["", ""])[:3]
            if kind != "C" or not fds or service not in handlers:
                for fd in fds:
                    os.close(fd)
                continue
            sock = socket.socket(fileno=fds[0])
            sock.setblocking(False)
            task = asyncio.ensure_future(run(conn_id, service, sock))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    reload_requested = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, app.stopping.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)   # the main process decides
    loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
    loop.add_reader(channel.fileno(), on_readable)
    _tell(channel, "R")
    event(log, "accepting worker ready", worker=index, pid=os.getpid())
    while not app.stopping.is_set():
        waiters = [asyncio.ensure_future(app.stopping.wait()),
                   asyncio.ensure_future(reload_requested.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        if reload_requested.is_set() and not app.stopping.is_set():
            reload_requested.clear()
            await app.reload()
    await app.stop()
    if tasks:
        await asyncio.wait(set(tasks), timeout=2.0)


def _tell(channel: socket.socket, message: str) -> None:
    with contextlib.suppress(OSError):
        channel.send(message.encode())


def main() -> None:
    from mailyard import log as logging_setup

    index, fd = int(sys.argv[1]), int(sys.argv[2])
    settings = pickle.load(sys.stdin.buffer)
    logging_setup.setup(settings.server.log_level)
    channel = socket.socket(fileno=fd)
    channel.setblocking(False)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        uvloop = None
    runner = uvloop.run if uvloop is not None else asyncio.run
    runner(serve(settings, index, channel))


if __name__ == "__main__":
    main()
