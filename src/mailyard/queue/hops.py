"""Running one hop of a delivery attempt: the filter, LMTP, or a remote domain's MX.

`Deliverer.run(hop, entry, recipients)` returns one `Reply` per recipient whatever the
peer does, plus the DSN action a success means ("delivered" for LMTP, "relayed" for an
MX without DSN, nothing for the filter, which reinjects). It owns what outlives an attempt:
idle connections (`ConnectionCache`), the per-domain connection limit, the verifying TLS
context. Alias expansion of local recipients (`expand_aliases`) happens before routing.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import email.utils
import ssl

from mailyard.envelope import Envelope
from mailyard.log import event, get_logger
from mailyard.queue import dsn
from mailyard.queue.filter_client import deliver_filter
from mailyard.queue.lmtp_client import lmtp_deliver
from mailyard.queue.records import EXPANDED, FAILED, QueueEntry, RecipientState, Reply
from mailyard.queue.routing import HOP_FILTER, HOP_LMTP, HOP_SMTP, Hop, domain_of
from mailyard.queue.smtp_out import ConnectionCache, Target, deliver_remote
from mailyard.queue.spoolfile import MESSAGE_OFFSET

log = get_logger("queue")

USER_UNKNOWN = "5.1.1"


def expand_aliases(entry: QueueEntry, accounts) -> list[RecipientState]:
    """Replace local aliases by their targets (once; children are marked final).

    A recipient that is itself a user (possibly with +detail) keeps its address, so the
    delivery agent still sees the detail; an unknown local recipient fails 550 5.1.1.
    Returns the recipients that failed so.
    """
    added: list[RecipientState] = []
    failed: list[RecipientState] = []
    for rcpt in entry.pending():
        if rcpt.final:
            continue
        domain = domain_of(rcpt.address)
        if not domain or not accounts.is_local_domain(domain):
            rcpt.final = True
            continue
        targets = accounts.resolve(rcpt.address)
        local, _, _ = rcpt.address.rpartition("@")
        base = f"{local.split('+', 1)[0]}@{domain}".lower()
        if len(targets) == 1 and targets[0].lower() in (rcpt.address.lower(), base):
            rcpt.final = True
            continue
        if not targets:
            rcpt.status = FAILED
            failed.append(rcpt)
            rcpt.reply = Reply(code=550, enhanced=USER_UNKNOWN,
                               text=f"<{rcpt.address}>: recipient address unknown")
            continue
        rcpt.status = EXPANDED
        known = {r.address.lower() for r in entry.recipients}
        for target in targets:
            if target.lower() in known:
                continue
            known.add(target.lower())
            added.append(RecipientState(
                address=target, orcpt=rcpt.orcpt or f"rfc822;{rcpt.address}",
                notify=rcpt.notify, parent=rcpt.address, final=True))
    entry.recipients.extend(added)
    return failed


class Deliverer:
    """Executes hops for a `Queue` (see the module docstring)."""

    def __init__(self, queue):
        self.queue = queue
        self.connections = ConnectionCache()     # idle outbound SMTP connections
        self.destinations: dict[str, asyncio.Semaphore] = {}
        self._tls: tuple[str, ssl.SSLContext] | None = None

    def close(self) -> None:
        self.connections.close_all()

    async def run(self, hop: Hop, entry: QueueEntry,
                  by_address: dict[str, RecipientState]) -> tuple[dict[str, Reply], str]:
        """Returns (reply per recipient, the DSN action for a success: "" = none)."""
        recipients = [by_address[a] for a in hop.recipients]
        config = self.queue.config
        spool = self.queue.spool
        if hop.kind == HOP_LMTP:
            replies = await lmtp_deliver(
                hop.destination, entry.envelope, recipients,
                self.queue._fresh.get(entry.queue_id)
                or (spool.entry_path(entry.queue_id), MESSAGE_OFFSET, entry.size),
                helo=self.queue.hostname, connect_timeout=config.connect_timeout,
                command_timeout=config.command_timeout)
            return replies, dsn.DELIVERED
        message = await self.queue.message_bytes(entry)
        if hop.kind == HOP_FILTER:
            from mailyard.config import parse_hostport

            host, port = parse_hostport(hop.destination)
            replies = await deliver_filter(
                Target(host=host, port=port, name=hop.destination), entry.envelope,
                recipients, message, helo=self.queue.hostname,
                connect_timeout=config.connect_timeout,
                command_timeout=config.command_timeout, cache=self.connections)
            return replies, ""     # the filter reinjects; final delivery reports success
        assert hop.kind == HOP_SMTP
        message = await self.dkim_sign(entry.envelope, message)
        # Per-destination limit: never more than this many connections to one domain.
        limit = self.destinations.setdefault(
            hop.destination, asyncio.Semaphore(config.max_per_destination))
        async with limit:
            replies, dsn_capable = await deliver_remote(
                self.queue.app.dns, hop.destination, entry.envelope, recipients, message,
                port=config.outbound_port, helo=self.queue.hostname,
                connect_timeout=config.connect_timeout,
                command_timeout=config.command_timeout, cache=self.connections,
                tls_context=self.outbound_tls())
        return replies, ("" if dsn_capable else dsn.RELAYED)

    def outbound_tls(self) -> ssl.SSLContext | None:
        """The verifying client context when `[queue] tls_verify` is on (built once)."""
        if not self.queue.config.tls_verify:
            return None
        key = self.queue.config.tls_ca_file
        if self._tls is None or self._tls[0] != key:
            context = ssl.create_default_context(cafile=key or None)
            self._tls = (key, context)
        return self._tls[1]

    async def dkim_sign(self, envelope: Envelope, message: bytes) -> bytes:
        """DKIM-sign outbound mail from a local domain that has an active key (RFC 6376).

        The signing domain is the From: header's (what DMARC aligns with), else the envelope
        sender's; the spool keeps the unsigned message, so every attempt signs afresh.
        """
        if not getattr(self.queue.settings, "senderauth", None) or \
                not self.queue.settings.senderauth.dkim_sign:
            return message
        accounts = self.queue.app.accounts
        head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
        candidates = [domain_of(email.utils.parseaddr(parsed.get("From", ""))[1]),
                      domain_of(envelope.sender)]
        for domain in candidates:
            if domain and accounts.is_local_domain(domain):
                from mailyard.senderauth.dkim_sign import sign

                try:
                    return await asyncio.to_thread(sign, message, self.queue.app.data_path, domain)
                except Exception as exc:  # noqa: BLE001 - never lose mail over a signature
                    event(log, "dkim signing failed", domain=domain, error=repr(exc))
                    return message
        return message
