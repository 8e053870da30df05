"""The POP3 listeners: `pop3` (port 110, STLS) and `pop3s` (port 995, implicit TLS).

This layer owns only the socket: reading with the idle timeout, writing with back-pressure,
the TLS handshake, the login throttle and the calls that block (password hashing, directory
scans, expunge) moved off the event loop. Everything the client says goes through
`proto.ServerProtocol`; everything done to the mailbox goes through `session.Maildrop`.

Theory of operation
-------------------
A connection is an `asyncio.Protocol` (`Pop3Connection`), not a coroutine around a
StreamReader: bytes from the client go into the protocol core in `data_received`, and
`_advance()` answers the buffered commands for as long as that needs no waiting — STAT, LIST,
UIDL, DELE, NOOP, RSET, CAPA and RETR/TOP of messages up to `session.LARGE_MESSAGE` — so a
download costs no task, future or reader wake-up per command. A command that must wait (a
login: password hash and maildrop scan in a thread; STLS: the handshake; QUIT: the UPDATE
expunge; a large message: read in a thread) is handed to one task; meanwhile input is only
buffered (reading stops above READ_LIMIT octets), and `_advance()` goes on when it is done.
Above WRITE_HIGH_WATER unsent octets the transport calls `pause_writing` and `_advance()`
stops until `resume_writing`.

On a plaintext connection a message whose dot-lines the store recorded (see
`session.Maildrop.open_verbatim`) is sent with sendfile(2) between its status line and its
terminator — in pieces, with a "." sent before each recorded dot-line (RFC 1939 §3) — corked
into one push (TCP_CORK) and written straight to the socket; only while the transport has
nothing buffered, and what the socket does not take goes through the transport, so the order
of the octets is kept. Other messages come from the read-ahead or are read and byte-stuffed
as the core's `wire` module says.

The idle watchdog (RFC 1939 §3 autologout) is one timer per connection. The session is idle
while the server waits for the client — for a command, or for it to read what it was sent;
`_waiting_since` is when that wait began (None while the server works).
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import os
import socket
import ssl
import time

from mailyard.log import event, get_logger
from mailyard.pop3 import proto, session, wire
from mailyard.pop3.proto import (
    CLOSED,
    NEED_DATA,
    Dele,
    List,
    Login,
    Noop,
    Quit,
    Retr,
    Rset,
    ServerProtocol,
    Stat,
    Stls,
    TooManyErrors,
    Top,
    Uidl,
)
from mailyard.server.listen import Listener, TrackedProtocol, serve_protocol

log = get_logger("pop3")
WRITE_HIGH_WATER = 1 << 20
# Octets of client input buffered while a command waits, before the connection stops reading.
READ_LIMIT = 1 << 20
# Answered from the snapshot alone (session.answer).
_ANSWERED = frozenset({Stat, List, Uidl, Dele, Noop, Rset})


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
    return await serve_protocol(app, service, address,
                                lambda: Pop3Connection(pop3, ctx, implicit),
                                ssl=ctx if implicit else None)


def _sendfile_socket(transport) -> socket.socket | None:
    """A socket object of our own on the connection's TCP socket (a duplicated descriptor:
    the transport's is not ours to close), for send, sendfile and TCP_CORK; None when the
    connection is not TCP. Close it before the transport closes (or the peer sees no FIN
    until it is)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    try:
        own = socket.socket(sock.family, sock.type, sock.proto, os.dup(sock.fileno()))
    except OSError:
        return None
    own.setblocking(False)
    return own


class Pop3Connection(TrackedProtocol):
    """One client connection: a `ServerProtocol` driven from the transport's callbacks (see
    the module docstring)."""

    def __init__(self, service: Pop3Service, tls_context, implicit_tls: bool):
        super().__init__()
        self.service = service
        self.tls_context = tls_context
        self.implicit_tls = implicit_tls
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.proto: ServerProtocol | None = None
        self.client_ip = ""
        self.user: str | None = None
        self.drop: session.Maildrop | None = None
        self.lock: session.MailboxLock | None = None
        self.auth_failures = 0
        self.retrieved = 0
        self.deleted = 0
        self.end = "disconnect"
        self._task: asyncio.Task | None = None  # answering a command that waits
        self._sock: socket.socket | None = None  # plaintext TCP: messages go by sendfile
        self._write_paused = False
        self._read_paused = False
        self._eof = False
        self._closing = False
        self._lost = False
        self._done = False
        self._waiting_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # -- transport callbacks ------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) else ""
        cfg = self.service.settings
        self.proto = ServerProtocol(
            max_line=cfg.max_line_length, max_bad_commands=cfg.max_bad_commands,
            tls_active=self.implicit_tls, tls_available=not self.implicit_tls,
            plaintext_allowed=plaintext_allowed(cfg.plaintext_auth, self.client_ip,
                                                self.implicit_tls))
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if not self.implicit_tls:
            self._sock = _sendfile_socket(transport)
        self._idle_timer = self.loop.call_later(cfg.idle_timeout, self._check_idle)
        self._advance()  # the greeting

    def data_received(self, data: bytes) -> None:
        p = self.proto
        p.receive_data(data)
        if self._task is None and not self._write_paused:
            self._advance()
        elif p.buffered_input > READ_LIMIT and not self._read_paused:
            self.transport.pause_reading()
            self._read_paused = True

    def eof_received(self) -> bool:
        # The commands already received are still answered (a client may pipeline its
        # whole session and then shut its side down); _advance closes when they are done.
        self._eof = True
        if self._task is None and not self._write_paused:
            self._advance()
        # Half-open until then (not possible under TLS: the connection closes now).
        return not self.proto.tls_active

    def pause_writing(self) -> None:
        self._write_paused = True
        if self._task is None:
            self._waiting_since = self.loop.time()  # waiting for the client to read

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._task is None and not self._closing:
            self._advance()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._drop_socket()
        if self._task is None:
            self._finish()

    def abort(self) -> None:
        """End the connection now (server shutdown after the drain timeout)."""
        if self._task is not None:
            self._task.cancel()
        if self.transport is not None:
            self.transport.abort()
        else:
            self._finish()

    # -- answering --------------------------------------------------------------------------
    def _advance(self) -> None:
        """Answer the buffered commands as far as that needs no waiting."""
        p = self.proto
        try:
            while self._task is None and not self._write_paused and not self._closing:
                ev = p.next_event()
                if ev is NEED_DATA:
                    self._flush()
                    if self._eof:
                        self._close()
                        return
                    if self._read_paused:
                        self._read_paused = False
                        self.transport.resume_reading()
                    self._waiting_since = self.loop.time()
                    return
                self._waiting_since = None
                kind = type(ev)
                if ev is CLOSED:
                    self._close()
                    return
                if kind is Retr or kind is Top:
                    if not self._retrieve_now(ev):
                        self._start(ev)
                elif kind in _ANSWERED:
                    session.answer(p, self.drop, ev)
                    self._flush()
                elif kind is TooManyErrors:
                    self.end = "too many bad commands"
                    self._close()
                    return
                else:
                    self._start(ev)
        except Exception:  # a bug in one session must not take the listener down
            log.exception("pop3: session crashed")
            self.end = "crashed"
            self.transport.abort()

    def _flush(self) -> None:
        chunks = self.proto.chunks_to_send()
        if chunks and not self._lost and not self._closing:
            self.transport.writelines(chunks)

    def _drop_socket(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _close(self) -> None:
        """Send what is queued, then close (at once if the client does not read)."""
        if self._closing:
            return
        self._flush()
        self._closing = True
        self._drop_socket()
        if self._write_paused:
            self.transport.abort()
        else:
            self.transport.close()

    def _finish(self) -> None:
        """The connection is gone and no command is running: unlock, log, report done."""
        if self._done:
            return
        self._done = True
        self._drop_socket()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self.lock is not None:
            self.lock.release()
        if self.drop is not None:
            self.drop.close()
        event(log, "session", client=self.client_ip or "local", user=self.user,
              tls=self.proto.tls_active if self.proto else self.implicit_tls,
              retrieved=self.retrieved, deleted=self.deleted, end=self.end)
        if not self.finished.done():
            self.finished.set_result(None)

    def _check_idle(self) -> None:
        """The idle watchdog: after `idle_timeout` seconds of waiting for the client, say so
        and close without entering UPDATE (RFC 1939 §3); otherwise look again when the
        current wait would expire."""
        if self._closing or self._lost:
            return
        idle = self.service.settings.idle_timeout
        since = self._waiting_since
        now = self.loop.time()
        if since is not None and now - since >= idle:
            self.proto.err(proto.REPLY_IDLE)
            self.end = "idle timeout"
            self._close()
            return
        delay = idle if since is None else idle - (now - since)
        self._idle_timer = self.loop.call_later(delay, self._check_idle)

    # -- RETR and TOP on the spot -------------------------------------------------------
    def _retrieve_now(self, ev: Retr | Top) -> bool:
        """Answer RETR/TOP without waiting; False for a large message (a task reads it)."""
        p, drop = self.proto, self.drop
        try:
            message = drop.get(ev.number)
        except session.DropError as exc:
            p.err(str(exc))
            self._flush()
            return True
        if message.size > session.LARGE_MESSAGE:
            return False
        if type(ev) is Top:
            self._answer_read(ev)
            return True
        sock = self._sock
        if not (sock is not None and message.dot_lines is not None
                and self._send_verbatim(ev.number)):
            body = drop.take_ahead(ev.number)
            if body is not None:
                p.multiline(f"{message.size} octets", body)
                self._flush()
            elif not self._answer_read(ev):
                return True
        self.retrieved += 1
        # While the client reads this answer, the next message is put in wire form — unless
        # it will go by sendfile, which needs no preparing.
        number = ev.number + 1
        if number <= len(drop.messages) and not (
                sock is not None and drop.messages[number - 1].dot_lines is not None):
            drop.prefetch(number)
        return True

    def _answer_read(self, ev: Retr | Top) -> bool:
        """Read the message and answer; False (and -ERR) when it is gone."""
        p = self.proto
        try:
            raw = self.drop.read(ev.number)
        except (LookupError, OSError):
            # Expunged meanwhile over IMAP (the store's MessageGone is a LookupError).
            p.err("Message was removed by another session.", proto.CODE_SYS_PERM)
            self._flush()
            return False
        session.retrieve(p, self.drop, ev, raw)
        self._flush()
        return True

    def _send_verbatim(self, number: int) -> bool:
        """Send message `number`'s file as its RETR answer; False when it cannot be (its
        dot-lines unknown, renamed or gone, or the transport has output queued)."""
        self._flush()
        if self.transport.get_write_buffer_size():
            return False  # the socket is behind: everything goes through the transport
        fd = self.drop.open_verbatim(number)
        if fd is None:
            return False
        try:
            message = self.drop.messages[number - 1]
            head, tail = self.proto.multiline_frame(f"{message.size} octets")
            self._send_file(head, fd, message.size, message.dot_lines, tail)
        finally:
            os.close(fd)
        return True

    def _send_file(self, head: bytes, fd: int, size: int, dot_lines: tuple[int, ...],
                   tail: bytes) -> None:
        """`head`, the file's `size` octets with a "." before each offset in `dot_lines`,
        `tail`: straight to the socket, corked; what it does not take now (EAGAIN, or an
        error the transport will report) goes through the transport after it."""
        sock = self._sock
        out = sock.fileno()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        sent_head = offset = stuffed = 0  # stuffed: the dots sent so far
        try:
            sent_head = sock.send(head)
            if sent_head == len(head):
                for stop in (*dot_lines, size):
                    while offset < stop:
                        sent = os.sendfile(out, fd, offset, stop - offset)
                        if sent == 0:
                            raise EOFError  # shorter than fstat said: caught below
                        offset += sent
                    if stop == size:
                        break
                    if sock.send(b".") != 1:
                        raise BlockingIOError
                    stuffed += 1
                tail = tail[sock.send(tail):]
        except (OSError, EOFError):  # EAGAIN: the socket is full; others: the transport's
            pass
        finally:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        if sent_head == len(head) and offset == size and not tail:
            return
        rest = os.pread(fd, size - offset, offset) if offset < size else b""
        if len(rest) != size - offset:
            # The file changed under us (Maildir files never do): no way to finish this
            # answer correctly, so end the connection rather than send a wrong message.
            log.error("pop3: message file shrank while being sent; closing the connection")
            self.end = "message file changed"
            self._closing = True
            self.transport.abort()
            return
        if stuffed < len(dot_lines):
            rest = wire.stuff_at(rest, tuple(o - offset for o in dot_lines[stuffed:]))
        self.transport.writelines([head[sent_head:], rest, tail])

    # -- commands that wait -------------------------------------------------------------
    def _start(self, ev) -> None:
        self._waiting_since = None
        self._task = self.loop.create_task(self._wait_for(ev))

    async def _wait_for(self, ev) -> None:
        done = True
        try:
            done = await self._answer_later(ev)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, TimeoutError):
            pass
        except Exception:
            log.exception("pop3: session crashed")
            self.end = "crashed"
        finally:
            self._task = None
        if self._lost:
            self._finish()
        elif done:
            self._close()
        else:
            self._flush()
            self._advance()

    async def _answer_later(self, ev) -> bool:
        """Answer a command that waits; True when the session must end."""
        p = self.proto
        if isinstance(ev, Login):
            return await self._login(ev)
        if isinstance(ev, Stls):
            self._flush()
            self._drop_socket()
            try:
                transport = await self.loop.start_tls(self.transport, self, self.tls_context,
                                                      server_side=True)
            except BaseException:
                # start_tls closed the connection, whose callbacks no longer reach us.
                self._lost = True
                self.end = "tls handshake failed"
                raise
            self.transport = transport
            transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
            p.tls_started()
            p.plaintext_allowed = True
            return False
        if isinstance(ev, Quit):
            await self._quit()
            return True
        if isinstance(ev, (Retr, Top)):
            await self._retrieve_large(ev)
            return False
        raise TypeError(f"no answer for {ev!r}")

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

    async def _retrieve_large(self, ev: Retr | Top) -> None:
        """RETR/TOP of a message above LARGE_MESSAGE: read off the event loop's thread."""
        p, drop = self.proto, self.drop
        try:
            drop.get(ev.number)
            raw = await asyncio.to_thread(drop.read, ev.number)
        except session.DropError as exc:
            p.err(str(exc))
            return
        except (LookupError, OSError):
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
