"""The content filter listener (the AMaViS stage): SMTP in on 10024, SMTP out to 10025.

Theory of operation: the queue connects, sends one message with all its recipients, and waits
for our answer to DATA. We spool the content to a file, scan it in the process pool (virus
engine, then spam engine), decide per recipient (`policy.decide`), and then — before we answer
— reinject every recipient that gets the message over SMTP to the reinjection port, grouped so
that recipients with the same treatment share one transaction and one copy. Quarantined
recipients get nothing; the quarantine keeps one copy. Only once every group was accepted
(250) by the reinjection port, and every quarantine copy is fsynced, do we answer 250; any
failure anywhere (an engine error, a scan timeout, the reinjection port down or answering 4xx)
answers 451, so the queue keeps the message and retries. We never answer 5xx to a message
that was received: it can no longer be rejected, only delivered, tagged, or quarantined
(the codec may still refuse malformed input, like an oversized message, with its own 5xx).

Clients must be in `[smtp] trusted_networks`: the filter is an internal hop.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import time
from dataclasses import replace
from pathlib import Path

import aiosmtplib

from mailyard import __version__
from mailyard.antivirus.from_config import EngineGeneration
from mailyard.config import parse_hostport
from mailyard.config.loader import is_trusted
from mailyard.envelope import Envelope, Recipient
from mailyard.filter import headers as hdr
from mailyard.filter.policy import FilterPolicy, decide, scan_headers
from mailyard.filter.quarantine import Quarantine
from mailyard.filter.verdicts import Decision, ScanResult
from mailyard.filter.worker import scan_file
from mailyard.log import event, get_logger
from mailyard.server.listen import Listener, serve_stream
from mailyard.smtp import (
    NEED_DATA,
    Auth,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Helo,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    replies,
)
from mailyard.smtp.replies import Reply

log = get_logger("filter")

COMMAND_TIMEOUT = 300.0
DEFERRED = Reply(451, "4.3.0", "Content filter: message deferred, try again later")
NOT_TRUSTED = Reply(554, "5.7.1", "Content filter accepts mail only from trusted networks")


class ReinjectError(Exception):
    """The reinjection port did not take the message; the queue must retry."""


class ContentFilter:
    """Scans, tags, quarantines and reinjects; one per process (`app.component("filter")`)."""

    def __init__(self, app):
        self.app = app
        self.generation = 0
        self.av_generation = app.component("antivirus.generation", EngineGeneration)
        self.quarantine = Quarantine(app.data_path)
        self.spool = app.data_path / "filter" / "tmp"
        self.spool.mkdir(parents=True, exist_ok=True)
        for stale in self.spool.iterdir():   # a crash left these; the queue still has them
            stale.unlink(missing_ok=True)
        limit = app.settings.filter.max_concurrent or 2 * (os.cpu_count() or 2)
        self.slots = asyncio.Semaphore(limit)
        self._ids = itertools.count(1)
        self.reinject_pool = ReinjectPool()
        app.on_reload(self._reloaded)
        app.on_shutdown(self._close_pool)

    async def _close_pool(self) -> None:
        self.reinject_pool.close()

    def _reloaded(self, settings) -> None:
        self.generation += 1     # workers rebuild their engines on their next scan

    @property
    def settings(self):
        return self.app.settings

    # -- scanning ------------------------------------------------------------------------
    async def scan(self, path: Path, skip_spam: bool = False) -> ScanResult:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.app.process_pool, scan_file, self.settings,
                                      self.generation, str(path), skip_spam,
                                      self.av_generation.value)
        try:
            return await asyncio.wait_for(future, self.settings.filter.scan_timeout)
        except TimeoutError:
            return ScanResult(error=f"scan took longer than "
                                    f"{self.settings.filter.scan_timeout:.0f}s")

    async def process(self, envelope: Envelope, path: Path) -> Reply:
        """Scan, decide, quarantine and reinject; the reply for the queue's DATA."""
        started = time.monotonic()
        async with self.slots:
            result = await self.scan(path)
        message = path.read_bytes()
        message_id = (hdr.get_header(message, "Message-ID") or [""])[0]
        if result.error:
            event(log, "deferred", reason="scan error", error=result.error.splitlines()[0],
                  message_id=message_id)
            return DEFERRED
        policy = FilterPolicy.from_settings(self.settings)
        decisions = [decide(policy, result, r.address) for r in envelope.recipients]
        quarantined = [d for d in decisions if d.action == "quarantine"]
        entry = None
        try:
            if quarantined:
                entry = await asyncio.to_thread(
                    self.quarantine.put, message,
                    replace(envelope, recipients=tuple(
                        r for r, d in zip(envelope.recipients, decisions)
                        if d.action == "quarantine")),
                    quarantined[0].reason, quarantined[0].detail, result.subject)
            await self._deliver_groups(envelope, message, result, decisions)
            if entry is not None and entry.reason == "virus":
                await self._notify_virus(envelope, entry, quarantined)
        except ReinjectError as exc:
            event(log, "deferred", reason="reinjection failed", error=str(exc),
                  message_id=message_id)
            if entry is not None:
                # The queue retries the whole message: drop this copy, the retry makes another.
                await asyncio.to_thread(self.quarantine.delete, entry.id)
            return DEFERRED
        event(log, "scanned", message_id=message_id, sender=envelope.sender or "<>",
              recipients=len(envelope.recipients),
              score=f"{result.score:.1f}" if result.spam_checked else None,
              virus=",".join(result.virus_names) or None,
              quarantined=f"{entry.id}:{entry.reason}" if entry else None,
              ms=int((time.monotonic() - started) * 1000))
        return Reply(250, "2.0.0", f"Ok: scanned by mailyard {__version__}"
                     + (f", quarantined as {entry.id}" if entry else ""))

    async def _deliver_groups(self, envelope: Envelope, message: bytes, result: ScanResult,
                              decisions: list[Decision]) -> None:
        groups: dict[tuple, list[tuple[Recipient, Decision]]] = {}
        for recipient, decision in zip(envelope.recipients, decisions):
            if decision.action == "deliver":
                groups.setdefault(decision.variant, []).append((recipient, decision))
        for members in groups.values():
            decision = members[0][1]
            body = hdr.rewrite(message, scan_headers(result, decision),
                               subject_prefix=self.settings.filter.subject_tag
                               if decision.tag_subject else "")
            await self.reinject(replace(envelope, recipients=tuple(r for r, _ in members)),
                                body)

    async def reinject(self, envelope: Envelope, message: bytes) -> None:
        await reinject(self.settings, envelope, message, self.reinject_pool)

    async def _notify_virus(self, envelope: Envelope, entry, quarantined) -> None:
        f = self.settings.filter
        targets = []
        if f.notify_postmaster:
            targets.append(f.postmaster or self._default_postmaster())
        if f.notify_recipient:
            targets += [d.recipient for d in quarantined]
        targets = [t for t in dict.fromkeys(targets) if t]
        if not targets:
            return
        hostname = self.settings.server.hostname
        text = (f"A message was quarantined because it contains a virus.\r\n\r\n"
                f"  Virus:       {entry.detail}\r\n"
                f"  Sender:      {envelope.sender or '<>'}\r\n"
                f"  Recipients:  {', '.join(entry.recipients)}\r\n"
                f"  Subject:     {entry.subject}\r\n"
                f"  Quarantine:  {entry.id}\r\n\r\n"
                f"Release it with: mailyard quarantine release {entry.id}\r\n")
        notice = (f"From: Content filter <postmaster@{hostname}>\r\n"
                  f"To: {', '.join(targets)}\r\n"
                  f"Subject: VIRUS ({entry.detail}) in mail from {envelope.sender or '<>'}\r\n"
                  f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime())}\r\n"
                  f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
                  f"Auto-Submitted: auto-generated\r\n"
                  f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
                  + text).encode()
        notice_env = Envelope(sender="", recipients=tuple(Recipient(t) for t in targets),
                              received_via="filter")
        try:
            await self.reinject(notice_env, notice)
        except ReinjectError as exc:   # the notice is a courtesy; the quarantine copy is safe
            event(log, "virus notice not sent", error=str(exc), quarantine=entry.id)

    def _default_postmaster(self) -> str:
        try:
            domains = sorted(self.app.accounts.local_domains())
        except Exception:
            domains = []
        return f"postmaster@{domains[0]}" if domains else ""

    # -- the SMTP session ---------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        hostname = self.settings.server.hostname
        conn = ServerConnection(max_message_size=self.settings.smtp.max_message_size)
        if isinstance(peer, tuple) and not is_trusted(self.settings, client_ip):
            writer.write(conn.respond(NOT_TRUSTED.with_text(NOT_TRUSTED.message)))
            await writer.drain()
            return
        writer.write(conn.reply(220, None, f"{hostname} mailyard content filter"))
        session = next(self._ids)
        sender = ""
        mail_params: dict = {}
        recipients: list[Recipient] = []
        spool_file = None
        spool_path: Path | None = None
        try:
            while True:
                ev = conn.next_event()
                if ev is NEED_DATA:
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(65536), COMMAND_TIMEOUT)
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                if isinstance(ev, DataChunk):
                    spool_file.write(ev.data)
                    continue
                if isinstance(ev, (Ehlo, Lhlo)):
                    writer.write(conn.reply(250, None, [
                        hostname, "PIPELINING",
                        f"SIZE {self.settings.smtp.max_message_size}", "8BITMIME",
                        "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]))
                elif isinstance(ev, Helo):
                    writer.write(conn.reply(250, None, hostname))
                elif isinstance(ev, Mail):
                    sender, mail_params, recipients = ev.address, ev.params, []
                    writer.write(conn.respond(replies.SENDER_OK))
                elif isinstance(ev, Rcpt):
                    notify = tuple(n.strip().upper() for n in
                                   (ev.params.get("NOTIFY") or "").split(",") if n.strip())
                    recipients.append(Recipient(ev.address, ev.params.get("ORCPT"), notify))
                    writer.write(conn.respond(replies.RECIPIENT_OK))
                elif isinstance(ev, Data):
                    spool_path = self.spool / f"{os.getpid()}-{session}-{secrets.token_hex(4)}"
                    spool_file = await asyncio.to_thread(open, spool_path, "wb")
                    writer.write(conn.respond(replies.START_DATA))
                elif isinstance(ev, DataEnd):
                    spool_file.close()
                    spool_file = None
                    if ev.error is not None:
                        writer.write(conn.respond(ev.error))
                    else:
                        envelope = Envelope(
                            sender=sender, recipients=tuple(recipients),
                            received_via="filter", client_ip=client_ip,
                            body=(mail_params.get("BODY") or "7BIT").upper(),
                            smtputf8="SMTPUTF8" in mail_params,
                            dsn_ret=mail_params.get("RET"), dsn_envid=mail_params.get("ENVID"),
                            received_at=time.time())
                        await writer.drain()
                        try:
                            reply = await self.process(envelope, spool_path)
                        except Exception:
                            log.exception("filter: processing failed; deferring")
                            reply = DEFERRED
                        writer.write(conn.respond(reply))
                    spool_path.unlink(missing_ok=True)
                    spool_path = None
                elif isinstance(ev, Rset):
                    recipients = []
                    writer.write(conn.respond(replies.RESET_OK))
                elif isinstance(ev, Noop):
                    writer.write(conn.respond(replies.NOOP_OK))
                elif isinstance(ev, Quit):
                    writer.write(conn.respond(replies.CLOSING))
                    await writer.drain()
                    return
                elif isinstance(ev, (StartTls, Auth)):
                    writer.write(conn.respond(replies.NOT_IMPLEMENTED))
                elif isinstance(ev, CommandError):
                    writer.write(conn.respond(ev.reply))
                else:
                    writer.write(conn.respond(replies.NOT_IMPLEMENTED))
        except TimeoutError:
            writer.write(conn.respond(replies.TIMEOUT))
            await writer.drain()
        finally:
            if spool_file is not None:
                spool_file.close()
            if spool_path is not None:
                spool_path.unlink(missing_ok=True)

class ReinjectPool:
    """Idle SMTP connections to the reinjection port, reused from message to message.

    A new connection per message cost a connect, EHLO, QUIT and a new server session each
    time (profiled: the filter stage's largest share of event-loop time after scanning).
    Only a connection whose last transaction ended in 250 goes back; one idle longer than
    `MAX_IDLE` seconds is closed rather than reused (the server's command timeout is longer).
    """

    MAX_IDLE = 20.0
    MAX_CONNECTIONS = 8

    def __init__(self) -> None:
        self._idle: list[tuple[str, float, aiosmtplib.SMTP]] = []

    def take(self, target: str) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            key, since, client = self._idle.pop()
            if key == target and now - since < self.MAX_IDLE and client.is_connected:
                return client
            client.close()
        return None

    def give_back(self, target: str, client: aiosmtplib.SMTP) -> None:
        if len(self._idle) >= self.MAX_CONNECTIONS or not client.is_connected:
            client.close()
            return
        self._idle.append((target, time.monotonic(), client))

    def close(self) -> None:
        for _, _, client in self._idle:
            client.close()
        self._idle.clear()


async def reinject(settings, envelope: Envelope, message: bytes,
                   pool: ReinjectPool | None = None) -> None:
    """Hand a message to the reinjection port; ReinjectError unless all got 250.

    With a `pool`, an idle connection is reused; if a reused one turns out dead before the
    server took anything (it timed out or the server restarted), one new connection is
    tried: MAIL is the first command of the transaction, so nothing can arrive twice.
    """
    target = settings.filter_reinject()
    client = pool.take(target) if pool is not None else None
    if client is not None:
        try:
            await _transaction(settings, client, envelope, message, target)
            pool.give_back(target, client)
            return
        except _StaleConnection:
            client.close()
        except BaseException:
            client.close()
            raise
    client = await _connect(settings, target)
    try:
        await _transaction(settings, client, envelope, message, target, fresh=True)
    except BaseException:
        await _quit(client)
        raise
    if pool is not None:
        pool.give_back(target, client)
    else:
        await _quit(client)


class _StaleConnection(Exception):
    """A reused connection failed at MAIL, before the server took anything."""


async def _connect(settings, target: str) -> aiosmtplib.SMTP:
    host, port = parse_hostport(target)
    client = aiosmtplib.SMTP(hostname=host, port=port, timeout=60,
                             local_hostname=settings.server.hostname,
                             start_tls=False, use_tls=False)
    try:
        await client.connect()
        await client.ehlo()
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        client.close()
        raise ReinjectError(f"{target}: {exc}") from None
    return client


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except Exception:
        client.close()


async def _transaction(settings, client: aiosmtplib.SMTP, envelope: Envelope,
                       message: bytes, target: str, fresh: bool = False) -> None:
    mail_options = []
    if envelope.body and envelope.body.upper() != "7BIT":
        mail_options.append(f"BODY={envelope.body}")
    if envelope.smtputf8:
        mail_options.append("SMTPUTF8")
    if envelope.dsn_ret:
        mail_options.append(f"RET={envelope.dsn_ret}")
    if envelope.dsn_envid:
        mail_options.append(f"ENVID={envelope.dsn_envid}")
    dsn = client.supports_extension("dsn")
    if not dsn:
        mail_options = [o for o in mail_options if not o.startswith(("RET=", "ENVID="))]
    try:
        await client.mail(envelope.sender, options=mail_options)
    except (TimeoutError, aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPResponseException, OSError) as exc:
        if not fresh and (not isinstance(exc, aiosmtplib.SMTPSenderRefused)
                          or exc.code == 421):     # the server closed the idle session
            raise _StaleConnection() from None
        raise ReinjectError(f"{target}: {exc}") from None
    except aiosmtplib.SMTPException as exc:
        raise ReinjectError(f"{target}: {exc}") from None
    try:
        for r in envelope.recipients:
            options = []
            if dsn and r.notify:
                options.append("NOTIFY=" + ",".join(r.notify))
            if dsn and r.orcpt:
                options.append(f"ORCPT={r.orcpt}")
            await client.rcpt(r.address, options=options)
        await client.data(message)
    except (TimeoutError, aiosmtplib.SMTPException, OSError) as exc:
        raise ReinjectError(f"{target}: {exc}") from None


async def start(app, service: str, address: str) -> Listener:
    content_filter = app.component("filter", lambda app: ContentFilter(app))
    if app.settings.spam.bayes:
        from mailyard.spam.service import learner

        learner(app)   # consume the Junk/un-Junk learn jobs IMAP leaves (also without spamd)
    listener = await serve_stream(app, service, address, content_filter.handle)
    pool = app.process_pool
    loop = asyncio.get_running_loop()
    # Warm the workers: each loads rules and signatures once, before the first message.
    warm = Path(content_filter.spool) / "warmup.eml"
    warm.write_bytes(b"Subject: warm-up\r\n\r\nwarm-up\r\n")

    async def warm_up() -> None:
        await app.pool_ready()  # a fork would wait for the fork server's preload
        jobs = [loop.run_in_executor(pool, scan_file, app.settings, content_filter.generation,
                                     str(warm), False, content_filter.av_generation.value)
                for _ in range(os.cpu_count() or 2)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        errors = {r.error.splitlines()[0] for r in results
                  if isinstance(r, ScanResult) and r.error}
        for error in errors:
            event(log, "engine failed to load", error=error)
        event(log, "engines ready", workers=len(jobs))

    app.spawn(warm_up(), "filter-warm-up")
    return listener
