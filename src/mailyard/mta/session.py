"""One inbound SMTP session: the asyncio shell around `mailyard.smtp.ServerConnection`.

Theory of operation: the session owns the socket, TLS, timeouts and the error budget; the
codec owns the protocol. The loop asks the codec for the next event; on `NEED_DATA` it
flushes the replies written so far (so a pipelined group, RFC 2920, gets its replies in one
write) and reads with the command or data timeout. Each event is answered through the
service's `Profile` (what it offers: STARTTLS, AUTH, checks) and the RCPT policy chain.
DATA is streamed: on DATA the envelope is handed to the queue (`queue.receive`), the
`Received:` header is written first, each `DataChunk` goes straight to the spool, and the
250 is sent only after `incoming.commit()` returned (message and envelope fsynced). Any
failure or disconnect before that aborts the incoming message.
"""

from __future__ import annotations

import asyncio
import os
import time

from mailyard.envelope import Envelope, Recipient
from mailyard.log import event, get_logger
from mailyard.mta import content, rdns
from mailyard.mta.policy import ClientInfo
from mailyard.mta.profiles import Profile, ehlo_lines, size_limit
from mailyard.mta.received import protocol_name, received_header
from mailyard.mta.sasl import MECHANISMS, SaslError, SaslExchange
from mailyard.smtp import (
    NEED_DATA,
    Auth,
    AuthResponse,
    CommandError,
    Data,
    DataChunk,
    DataEnd,
    Ehlo,
    Expn,
    Helo,
    Help,
    Lhlo,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    Vrfy,
    replies,
)
from mailyard.smtp.address import MAIL_PARAMS, AddressError, Mailbox, Path, xtext_decode

log = get_logger("mta")
READ_SIZE = 65536
_PID = os.getpid()       # which process accepted a message (see `mta.workers`)


class Session:
    """One client connection on one MTA listener (see the module docstring)."""

    def __init__(self, mta, profile: Profile, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, client_ip: str, trusted: bool):
        self.mta = mta
        self.settings = mta.settings
        self.profile = profile
        self.reader = reader
        self.writer = writer
        self.client_ip = client_ip
        self.trusted = trusted
        smtp = self.settings.smtp
        self.conn = ServerConnection(max_message_size=size_limit(self.settings, profile),
                                     max_line_length=smtp.max_line_length,
                                     bare_newlines=smtp.bare_newlines,
                                     mail_params=MAIL_PARAMS if smtp.smtputf8 else
                                     MAIL_PARAMS - {"SMTPUTF8"},
                                     tls=profile.implicit_tls)
        self.tls_info: str | None = self._describe_tls() if profile.implicit_tls else None
        self.auth_user: str | None = None
        self.errors = 0
        self.messages = 0
        self._sasl: SaslExchange | None = None
        self._dnsbl = None
        self._rdns = None
        self.client_name = ""
        self.idle = False       # waiting for a command, nothing in flight
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self.sender: Path | None = None
        self.mail_params: dict[str, str | None] = {}
        self.recipients: list[Recipient] = []
        self.incoming = None
        self._write_failed = False
        self._received = b""
        self._buffer: bytearray | None = None       # whole message, "verify" mode only
        self._content_mode: str | None = None
        spf = getattr(self, "_spf", None)
        if spf is not None:
            spf.cancel()
        self._spf = None

    # -- helpers ---------------------------------------------------------------------------
    def client(self) -> ClientInfo:
        return ClientInfo(self.profile.service, self.client_ip, self.trusted, self.auth_user,
                          self.conn.hello, self.conn.tls)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def respond(self, reply: replies.Reply) -> None:
        self.send(self.conn.respond(reply))

    def error(self, reply: replies.Reply) -> None:
        """Answer with an error and spend one unit of the session's error budget."""
        self.respond(reply)
        self.errors += 1
        if self.errors >= self.settings.smtp.max_errors and self.conn.state != "closed":
            self.respond(replies.TOO_MANY_ERRORS)

    def _describe_tls(self) -> str | None:
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        cipher = ssl_object.cipher()
        return f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()

    def _auth_offered(self) -> bool:
        return self.profile.auth and (self.conn.tls or not self.settings.smtp.auth_requires_tls)

    def ehlo_keywords(self, helo: str) -> list[str]:
        return ehlo_lines(self.settings, helo, self.client_ip,
                          starttls=self.profile.starttls and not self.conn.tls
                          and self.mta.tls_available, auth=self._auth_offered(),
                          size=self.conn.max_message_size)

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        started = time.monotonic()
        try:
            if self.profile.trusted_only and not self.trusted:
                self.send(self.conn.reply(554, None, f"{self.settings.server.hostname} "
                                          "Access denied: not a trusted network"))
                await self.writer.drain()
                return
            if self.profile.checks and not self.profile.auth_required:
                # Look the client up while it says EHLO; the answer is needed at RCPT.
                self._dnsbl = self.mta.policy.start_dnsbl(self.client())
            if self.profile.service == "smtp" and not self.trusted:
                self._rdns = asyncio.ensure_future(rdns.confirmed_name(
                    self.mta.app.dns, self.client_ip, self.settings.dns.timeout))
            self.send(self.conn.reply(220, None,
                                      f"{self.settings.server.hostname} ESMTP mailyard"))
            await self._loop()
        finally:
            if self.incoming is not None:
                self.incoming.abort()
                self.incoming = None
            for lookup in (self._dnsbl, self._rdns):
                if lookup is not None:
                    lookup.cancel()
            event(log, "session end", service=self.profile.service, client=self.client_ip,
                  helo=self.conn.hello, tls=self.tls_info, auth=self.auth_user,
                  messages=self.messages, errors=self.errors,
                  seconds=f"{time.monotonic() - started:.3f}")

    async def _loop(self) -> None:
        smtp = self.settings.smtp
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        # One idle watchdog per connection instead of a timeout object per read: each read
        # only notes when it began; the timer re-arms itself and cancels a read that has
        # waited longer than allowed (RFC 5321 §4.5.3.2).
        self._read_since: float | None = None
        self._read_limit = smtp.command_timeout
        self._timed_out = False

        def watchdog() -> None:
            since = self._read_since
            now = loop.time()
            if since is not None and now >= since + self._read_limit:
                self._timed_out = True
                task.cancel()
                return
            due = since + self._read_limit if since is not None else now + self._read_limit
            self._watchdog = loop.call_at(max(due, now + 0.01), watchdog)

        self._watchdog = loop.call_at(loop.time() + self._read_limit, watchdog)
        try:
            await self._serve(loop, smtp)
        finally:
            self._watchdog.cancel()

    async def _serve(self, loop, smtp) -> None:
        writer, reader, conn = self.writer, self.reader, self.conn
        while True:
            if conn.state == "closed":
                await writer.drain()
                return
            ev = conn.next_event()
            if ev is NEED_DATA:
                # (writer.transport, not a copy: STARTTLS replaces it)
                if writer.transport.get_write_buffer_size():
                    await writer.drain()     # back-pressure only when something waits
                in_data = conn.state == "data"
                self._read_limit = smtp.data_timeout if in_data else smtp.command_timeout
                self.idle = not in_data and self.incoming is None
                self._read_since = loop.time()
                try:
                    data = await reader.read(READ_SIZE)
                except asyncio.CancelledError:
                    if not self._timed_out:
                        raise
                    asyncio.current_task().uncancel()
                    self.respond(replies.TIMEOUT)   # RFC 5321 §4.5.3.2
                    await writer.drain()
                    return
                finally:
                    self._read_since = None
                    self.idle = False
                if not data:
                    return       # the client went away; `run` aborts any open message
                conn.receive_data(data)
                continue
            await self.handle(ev)

    async def handle(self, ev) -> None:
        if isinstance(ev, DataChunk):
            if self._buffer is not None:
                self._buffer += ev.data
            elif self.incoming is not None and not self._write_failed:
                try:
                    self.incoming.write(ev.data)
                except OSError as exc:
                    self._write_failed = True
                    event(log, "spool write failed", client=self.client_ip, error=str(exc))
            return
        handler = _DISPATCH.get(type(ev))
        await handler(self, ev)

    def close_if_idle(self) -> bool:
        """At shutdown: say 421 and hang up if the client is between commands."""
        if not self.idle or self.conn.state == "closed":
            return False
        self.respond(replies.SERVICE_UNAVAILABLE.with_text(
            f"{self.settings.server.hostname} shutting down, try again later"))
        self.writer.close()     # flushes the 421 first; the read then sees EOF
        return True

    # -- commands --------------------------------------------------------------------------
    async def on_helo(self, ev) -> None:
        self._reset_transaction()
        if isinstance(ev, Helo):
            self.send(self.conn.reply(250, None, f"{self.settings.server.hostname}"))
        else:
            self.send(self.conn.reply(250, None, self.ehlo_keywords(ev.domain)))

    async def on_starttls(self, ev) -> None:
        if not self.profile.starttls:
            self.error(replies.NOT_IMPLEMENTED)
            return
        if not self.mta.tls_available:
            self.respond(replies.TLS_NOT_AVAILABLE)
            return
        self.respond(replies.READY_TLS)   # the codec discards what it had buffered
        await self.writer.drain()
        # RFC 3207 §4.2 / CVE-2011-0411: plaintext that arrived after STARTTLS but is still
        # in the stream's buffer must not be read as if it came over TLS.
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            event(log, "discarded plaintext pipelined after STARTTLS", client=self.client_ip,
                  bytes=len(buffered))
            buffered.clear()
        await self.writer.start_tls(self.mta.tls_context(),
                                    ssl_handshake_timeout=self.settings.smtp.command_timeout)
        self._reset_transaction()
        self.auth_user = None
        self.tls_info = self._describe_tls()

    async def on_auth(self, ev: Auth) -> None:
        if not self.profile.auth:
            self.error(replies.NOT_IMPLEMENTED)
            return
        if not self._auth_offered():   # RFC 4954 §4 + RFC 3207: no passwords in the clear
            self.error(replies.ENCRYPTION_REQUIRED)
            return
        if ev.mechanism not in MECHANISMS:
            self.error(replies.AUTH_MECHANISM_UNKNOWN)
            return
        self._sasl = SaslExchange(ev.mechanism)
        await self._sasl_step(lambda: self._sasl.start(ev.initial))

    async def on_auth_response(self, ev: AuthResponse) -> None:
        if self._sasl is None:
            self.error(replies.BAD_SEQUENCE)
            return
        if ev.cancelled:
            self._sasl = None
            self.error(replies.AUTH_CANCELLED)
            return
        await self._sasl_step(lambda: self._sasl.step(ev.data))

    async def _sasl_step(self, step) -> None:
        try:
            kind, value = step()
        except SaslError:
            self._sasl = None
            self.error(replies.AUTH_BAD_BASE64)
            return
        if kind == "challenge":
            self.send(self.conn.reply(334, None, value))
            return
        self._sasl = None
        login, password = value
        try:
            user = await asyncio.to_thread(self.mta.accounts.authenticate, login, password)
        except Exception as exc:  # noqa: BLE001 - store unavailable: 454, try later
            event(log, "auth backend error", client=self.client_ip, error=repr(exc))
            self.respond(replies.TEMP_AUTH_FAILURE)
            return
        if user is None:
            event(log, "auth failed", service=self.profile.service, client=self.client_ip,
                  login=login)
            self.error(replies.AUTH_FAILED)
            return
        self.auth_user = user
        event(log, "auth ok", service=self.profile.service, client=self.client_ip, user=user)
        self.respond(replies.AUTH_OK)

    async def on_mail(self, ev: Mail) -> None:
        if self.profile.auth_required and self.auth_user is None:
            self.error(replies.AUTH_REQUIRED)
            return
        self._reset_transaction()
        self.sender = ev.path
        self.mail_params = ev.params
        self._content_mode = content.content_mode(self.settings, self.profile.service,
                                                  self.trusted, self.auth_user)
        if self._content_mode == content.VERIFY:
            self._spf = content.start_spf(self.mta.app.dns, self.client_ip, ev.address,
                                          self.conn.hello or "")
        self.respond(replies.SENDER_OK)

    def _postmaster(self) -> Path:
        """RFC 5321 §4.1.1.3: <Postmaster> without a domain is ours."""
        domains = sorted(self.mta.accounts.local_domains())
        hostname = self.settings.server.hostname
        domain = hostname if hostname in domains or not domains else domains[0]
        return Path(Mailbox("postmaster", domain))

    async def on_rcpt(self, ev: Rcpt) -> None:
        if len(self.recipients) >= self.settings.smtp.max_recipients:
            self.respond(replies.TOO_MANY_RECIPIENTS)     # RFC 5321 §4.5.3.1.8
            return
        path = self._postmaster() if ev.path.postmaster else ev.path
        if self.profile.checks:
            try:
                result = await self.mta.policy.check(self.client(), self.sender.address, path,
                                                     self._dnsbl)
            except Exception as exc:  # noqa: BLE001 - a broken check defers, never drops
                event(log, "rcpt check failed", client=self.client_ip,
                      rcpt=f"<{path.address}>", error=repr(exc))
                self.respond(replies.LOCAL_ERROR)
                return
            if not result.accepted:
                if result.reply.is_permanent:
                    self.error(result.reply)
                else:
                    self.respond(result.reply)
                return
        if any(r.address.lower() == path.address.lower() for r in self.recipients):
            self.respond(replies.RECIPIENT_OK)   # a duplicate: delivered once
            return
        notify = tuple(filter(None, (ev.params.get("NOTIFY") or "").upper().split(",")))
        orcpt = ev.params.get("ORCPT")
        try:
            orcpt = xtext_decode(orcpt) if orcpt else None
        except AddressError:
            orcpt = None
        self.recipients.append(Recipient(path.address, orcpt, notify))
        self.respond(replies.RECIPIENT_OK)

    def _envelope(self) -> Envelope:
        params = self.mail_params
        size = params.get("SIZE")
        envid = params.get("ENVID")
        return Envelope(
            sender=self.sender.address, recipients=tuple(self.recipients),
            received_via=self.profile.service, client_ip=self.client_ip,
            client_helo=self.conn.hello or "", client_name=self.client_name,
            auth_user=self.auth_user, tls=self.tls_info,
            body=(params.get("BODY") or "7BIT").upper(), smtputf8="SMTPUTF8" in params,
            size_hint=int(size) if size else None,
            dsn_ret=(params.get("RET") or "").upper() or None,
            dsn_envid=xtext_decode(envid) if envid else None)

    async def _client_name(self) -> str:
        """The FCrDNS name once known (started at connect; bounded by the DNS timeout)."""
        if self._rdns is not None:
            self.client_name = await asyncio.shield(self._rdns)
            self._rdns = None
        return self.client_name

    async def on_data(self, ev: Data) -> None:
        await self._client_name()
        envelope = self._envelope()
        try:
            self.incoming = await self.mta.queue().receive(envelope)
            header = received_header(
                helo=self.conn.hello, client_ip=self.client_ip,
                client_name=self.client_name, hostname=
                self.settings.server.hostname, protocol=protocol_name(
                    self.conn.extended, self.conn.tls, self.auth_user is not None),
                queue_id=self.incoming.queue_id, tls=self.tls_info, auth_user=self.auth_user,
                recipient=envelope.recipients[0].address if len(envelope.recipients) == 1
                else None, utf8=envelope.smtputf8)
            if self._content_mode is None:
                self.incoming.write(header)
            else:
                self._received = header
                self._buffer = bytearray()
        except Exception as exc:  # noqa: BLE001 - whatever broke, 451 is the safe answer
            event(log, "queue unavailable", client=self.client_ip, error=repr(exc))
            if self.incoming is not None:
                self.incoming.abort()
                self.incoming = None
            self.respond(replies.LOCAL_ERROR)
            return
        self.respond(replies.START_DATA)

    async def on_data_end(self, ev: DataEnd) -> None:
        incoming, self.incoming = self.incoming, None
        envelope_sender = self.sender.address if self.sender else ""
        recipients = len(self.recipients)
        write_failed = self._write_failed
        buffered, mode, spf_lookup, received = (self._buffer, self._content_mode, self._spf,
                                                self._received)
        self._spf = None
        helo = self.conn.hello or ""
        self._reset_transaction()
        if ev.error is None and incoming is not None and buffered is not None:
            reject = await self._prepare(incoming, mode, bytes(buffered), received,
                                         envelope_sender, helo, spf_lookup)
            if reject is not None:
                ev = DataEnd(ev.size, reject)
        if ev.error is not None or incoming is None or write_failed:
            if incoming is not None:
                incoming.abort()
            reply = ev.error or replies.LOCAL_ERROR
            event(log, "message refused", service=self.profile.service,
                  client=self.client_ip, sender=f"<{envelope_sender}>", size=ev.size,
                  reply=str(reply))
            self.respond(reply)
            return
        try:
            queue_id = await incoming.commit()
        except Exception as exc:  # noqa: BLE001 - not durable: 451, never a 250
            incoming.abort()
            event(log, "queue commit failed", client=self.client_ip, error=repr(exc))
            self.respond(replies.LOCAL_ERROR)
            return
        self.messages += 1
        event(log, "message accepted", service=self.profile.service, client=self.client_ip,
              queue_id=queue_id, sender=f"<{envelope_sender}>", recipients=recipients,
              size=ev.size, auth=self.auth_user, tls=self.tls_info, pid=_PID)
        self.respond(replies.OK.with_text(f"Ok: queued as {queue_id}"))

    async def _prepare(self, incoming, mode: str, message: bytes, received: bytes,
                       sender: str, helo: str, spf_lookup) -> replies.Reply | None:
        """Check a buffered message and write it to `incoming`; a refusal or None."""
        prepared = await content.verify(self.settings, self.mta.app.dns,
                                        client_ip=self.client_ip, helo=helo, sender=sender,
                                        message=message, spf_lookup=spf_lookup)
        if prepared.reject is not None:
            return prepared.reject
        try:
            # RFC 8601 §5: Authentication-Results on top, then our trace field.
            incoming.write(prepared.prepend + received)
            incoming.write(prepared.message)
        except OSError as exc:
            event(log, "spool write failed", client=self.client_ip, error=str(exc))
            return replies.LOCAL_ERROR
        return None

    async def on_rset(self, ev) -> None:
        if self.incoming is not None:
            self.incoming.abort()
        self._reset_transaction()
        self.respond(replies.RESET_OK)

    async def on_simple(self, ev) -> None:
        if isinstance(ev, Noop):
            self.respond(replies.NOOP_OK)
        elif isinstance(ev, Quit):
            self.respond(replies.CLOSING)
        elif isinstance(ev, Vrfy):
            self.respond(replies.VRFY_CANNOT)   # RFC 5321 §3.5.3: no address harvesting
        elif isinstance(ev, Expn):
            self.respond(replies.NOT_IMPLEMENTED)
        elif isinstance(ev, Help):
            self.respond(replies.HELP)

    async def on_command_error(self, ev: CommandError) -> None:
        self.error(ev.reply)


_DISPATCH = {
    Helo: Session.on_helo, Ehlo: Session.on_helo, Lhlo: Session.on_helo,
    StartTls: Session.on_starttls, Auth: Session.on_auth,
    AuthResponse: Session.on_auth_response, Mail: Session.on_mail, Rcpt: Session.on_rcpt,
    Data: Session.on_data, DataEnd: Session.on_data_end, Rset: Session.on_rset,
    Noop: Session.on_simple, Quit: Session.on_simple, Vrfy: Session.on_simple,
    Expn: Session.on_simple, Help: Session.on_simple, CommandError: Session.on_command_error,
}
