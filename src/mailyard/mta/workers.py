"""Accepting processes: SMTP sessions on more than one core, one queue.

Theory of operation. One asyncio process runs every SMTP session on one core; Postfix runs
its smtpd processes, cleanup and qmgr on all of them. With `[smtp] processes` above 1 the
main process keeps the listening sockets of the MTA listeners (smtp, submission,
submissions, reinject) and starts `processes - 1` accepting workers (`mta.worker`), each
joined to it by a unix SOCK_SEQPACKET channel. The main process accepts every connection,
counts it per client IP (so `max_connections_per_ip` holds across processes), and either
serves it itself or passes the socket over the channel (SCM_RIGHTS) to the worker with the
fewest open sessions. The main process, which also accepts, schedules and delivers, counts
as LOCAL_PENALTY sessions busier than it is: it serves sessions only while no worker is
ready or when the workers are far busier (measured: with sessions shared more evenly, its
event loop was the one saturated, the worker's idle two thirds of the time).

A worker runs the sessions exactly as the main process would: it takes queue files from its
own stock in the same spool (created, flock'ed and their directory entry fsynced ahead),
commits into them, and answers 250 only after the fsync. It then tells the main process
the queue id over the channel ("Q ID"); the main process, the spool's one scheduler (it
holds queue/lock), loads the entry from its file and schedules it. When a session ends the
worker says "E CONN" and the main process releases its count. Messages:

    main → worker   "C CONN SERVICE" + the socket    serve this connection
    worker → main   "R"                              ready for connections
                    "Q QUEUE_ID"                     committed (the 250 follows)
                    "E CONN"                         connection CONN is over

Crashes. A worker that dies (kill -9 included) closes its channel; the main process waits
for it to exit (its flocks are then gone), schedules whatever it committed and had not
announced, discards the files it left unfinished (`Queue.adopt_orphans`), and starts a new
worker. Its open connections are simply cut: a client that got no 250 retries. When the
main process dies, a worker sees its channel close and exits at once — as if killed with
it — so the next start-up recovers the spool with no writer left behind.

Shutdown: SIGTERM to the main process stops its accepting, sends SIGTERM to the workers,
which drain their sessions like the main process does, and waits for them (reading their
last announcements) before the queue stops. SIGHUP is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field

from mailyard.log import event, get_logger

log = get_logger("mta")

AUTO_MAX_WORKERS = 4         # `processes = 0`: one worker per CPU, at most this many
LOCAL_PENALTY = 10
RESPAWN_DELAY = 1.0          # seconds before a dead worker is replaced...
RESPAWN_MAX_DELAY = 60.0     # ...doubling each time it dies young, up to this
STABLE_AFTER = 30.0          # a worker that lived this long counts as healthy again
RECV_SIZE = 128 * 1024       # the largest channel packet (worker.ANNOUNCE_LIMIT and a record)


def process_count(settings) -> int:
    """How many processes run SMTP sessions (the main one included)."""
    configured = settings.smtp.processes
    if configured == 0:
        # Sessions in one worker per CPU; the main process accepts, dispatches, schedules
        # and delivers (measured on 2 cores: main + 1 worker left the worker the busier
        # one, 1.3 ms CPU per message against 0.8; main + 2 workers, 0.8 each). One CPU:
        # nothing to share out.
        cpus = os.cpu_count() or 1
        return 1 if cpus == 1 else min(cpus, AUTO_MAX_WORKERS) + 1
    return configured


def respawn_delay(previous: float | None, lived: float) -> float:
    """Seconds before a worker that died after `lived` seconds is started again, given
    the delay before its last start (None: its first start). A worker that keeps dying
    young (a broken config, no memory, a crash at start-up) is retried ever more slowly, so
    it does not cost a process start and a log line every second; one that ran a while
    is replaced at once, as before."""
    if previous is None or lived >= STABLE_AFTER:
        return RESPAWN_DELAY
    return min(previous * 2, RESPAWN_MAX_DELAY)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    channel: socket.socket
    started: float = 0.0        # event-loop time of its start
    ready: bool = False
    active: int = 0
    # connection id -> (the listener's per-IP counter, client IP)
    connections: dict[int, tuple[Counter, str]] = field(default_factory=dict)


class AcceptPool:
    """The main process's side of the accepting workers (`app.component("accept_pool")`)."""

    def __init__(self, app):
        self.app = app
        self.size = process_count(app.settings) - 1
        self.workers: dict[int, _Worker] = {}
        self.local_active = 0
        self._next_conn = 0
        self._started = False
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._all_gone: asyncio.Event | None = None
        self._delays: dict[int, float] = {}  # worker index -> the delay before its start

    # -- life cycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers (once; the queue is started and locked before this)."""
        if self._started:
            return
        self._started = True
        self.app.on_shutdown(self.stop)
        self.app.on_reload(self._reload)
        for index in range(1, self.size + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mailyard.mta.worker", str(index), str(theirs.fileno())],
                stdin=subprocess.PIPE, pass_fds=[theirs.fileno()], close_fds=True)
        except OSError as exc:
            ours.close()
            theirs.close()
            event(log, "could not start an accepting worker", worker=index, error=repr(exc))
            return
        finally:
            with contextlib.suppress(OSError):
                theirs.close()
        assert proc.stdin is not None
        try:
            # The settings as this process has them (a reload included), not re-read.
            proc.stdin.write(pickle.dumps(self.app.settings))
            proc.stdin.close()
        except OSError:
            pass                    # it died at once: its channel closes, handled below
        ours.setblocking(False)
        worker = _Worker(index, proc, ours, started=asyncio.get_running_loop().time())
        self.workers[index] = worker
        asyncio.get_running_loop().add_reader(ours.fileno(), self._on_readable, worker)
        event(log, "accepting worker started", worker=index, pid=proc.pid)

    async def stop(self) -> None:
        """SIGTERM the workers and wait for them to drain and exit."""
        self._stopping = True
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        if self.workers:                    # their channels close as they exit
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(),
                                       self.app.settings.server.shutdown_timeout + 3.0)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)

    def _reload(self, settings) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGHUP)

    # -- connections -----------------------------------------------------------------------
    def dispatch(self, service: str, listener, conn: socket.socket, peer, per_ip: Counter,
                 handle, tls) -> None:
        """Serve one accepted connection here or in the least busy worker."""
        ip = str(peer[0]).split("%", 1)[0] if isinstance(peer, tuple) else "127.0.0.1"
        worker = None
        if per_ip[ip] < self.app.settings.smtp.max_connections_per_ip and not self._stopping:
            # The main process also accepts, schedules and delivers: it counts as
            # LOCAL_PENALTY sessions busier than it is.
            best = self.local_active + LOCAL_PENALTY
            for candidate in self.workers.values():
                if candidate.ready and candidate.active <= best:
                    worker, best = candidate, candidate.active
        if worker is not None and self._pass(worker, service, conn, per_ip, ip):
            return
        self.local_active += 1
        task = asyncio.ensure_future(self._serve_here(listener, conn, handle, tls))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_here(self, listener, conn: socket.socket, handle, tls) -> None:
        async def counted(reader, writer) -> None:
            try:
                await handle(reader, writer)
            finally:
                self.local_active -= 1

        if not await listener.serve_socket(conn, counted, tls):
            self.local_active -= 1          # gone before its session began

    def _pass(self, worker: _Worker, service: str, conn: socket.socket, per_ip: Counter,
              ip: str) -> bool:
        self._next_conn += 1
        conn_id = self._next_conn
        try:
            socket.send_fds(worker.channel, [f"C {conn_id} {service}".encode()],
                            [conn.fileno()])
        except OSError as exc:      # its channel is full or gone: serve it here
            event(log, "could not pass a connection to a worker", worker=worker.index,
                  error=repr(exc))
            return False
        conn.close()                # the worker has its own descriptor now
        per_ip[ip] += 1
        worker.active += 1
        worker.connections[conn_id] = (per_ip, ip)
        return True

    # -- the channel -------------------------------------------------------------------------
    def _on_readable(self, worker: _Worker) -> None:
        while True:
            try:
                message = worker.channel.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self._lost(worker)
                return
            kind, arg = message[:1], message[2:]
            if kind == b"Q":
                self._announced(arg)
            elif kind == b"E":
                self._release(worker, int(arg))
            elif kind == b"R":
                worker.ready = True      # (the worker logs "accepting worker ready")

    def _announced(self, packet: bytes) -> None:
        """ "Q ID RECORD_SIZE\n" + the envelope record [+ the message]."""
        head, _, body = packet.partition(b"\n")
        queue_id, _, record_size = head.decode("ascii", "replace").partition(" ")
        queue = self.app.component("queue", _no_queue)
        try:
            if not record_size:                     # too big for a packet: read the file
                queue.admit_announced(queue_id)
                return
            size = int(record_size)
            queue.admit_announced(queue_id, body[:size], body[size:] or None)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Committed all the same: the scheduler reads it from the spool instead.
            event(log, "could not take an announced entry", queue_id=queue_id,
                  error=repr(exc))
            with contextlib.suppress(OSError):
                queue.admit_announced(queue_id)

    def _release(self, worker: _Worker, conn_id: int) -> None:
        counted = worker.connections.pop(conn_id, None)
        if counted is None:
            return
        per_ip, ip = counted
        worker.active -= 1
        per_ip[ip] -= 1
        if per_ip[ip] <= 0:
            del per_ip[ip]

    def _lost(self, worker: _Worker) -> None:
        asyncio.get_running_loop().remove_reader(worker.channel.fileno())
        worker.channel.close()
        self.workers.pop(worker.index, None)
        if not self.workers and self._all_gone is not None:
            self._all_gone.set()
        for conn_id in list(worker.connections):
            self._release(worker, conn_id)
        task = asyncio.ensure_future(self._after_exit(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _after_exit(self, worker: _Worker) -> None:
        try:
            status = await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), 10.0)
        except TimeoutError:
            worker.proc.kill()
            status = await asyncio.to_thread(worker.proc.wait)
        lived = asyncio.get_running_loop().time() - worker.started
        delay = respawn_delay(self._delays.get(worker.index), lived)
        if not self._stopping or status != 0:
            event(log, "accepting worker exited", worker=worker.index, pid=worker.proc.pid,
                  status=status, lived=round(lived, 1),
                  **({} if self._stopping else {"restart_in": delay}))
        # Its flocks are gone with it: what it committed is now ours, what it left half
        # written is nobody's.
        self.app.component("queue", _no_queue).adopt_orphans()
        if not self._stopping:
            self._delays[worker.index] = delay
            await asyncio.sleep(delay)
            if not self._stopping:
                self._spawn(worker.index)


def _no_queue(app):
    raise RuntimeError("the MTA's queue is made by its listener's start")
