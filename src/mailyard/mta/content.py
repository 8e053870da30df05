"""What the MTA does with a whole message before queueing it: sender authentication on the
MX. Everything else streams straight to the spool. (DKIM signing of our users' mail is done
by the queue at the outbound hop, after the filter, so the signature covers what leaves.)

Theory of operation: `content_mode(...)` decides at MAIL time whether a transaction needs
the whole message — "verify" (the `smtp` listener, an untrusted and unauthenticated client,
`[senderauth] check`: SPF at MAIL, DKIM + DMARC after DATA, an Authentication-Results field,
RFC 8601) — or None (stream). Only "verify" holds the message in memory (bounded by
`[smtp] max_message_size`, which the codec enforces). The result is a header field to
prepend; `reject` carries the reply when `[dmarc] enforce` and the sender's domain publishes
p=reject and the message fails DMARC.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from mailyard.log import event, get_logger
from mailyard.senderauth import authresults
from mailyard.senderauth.verdict import check_message, check_spf
from mailyard.smtp import replies
from mailyard.smtp.replies import Reply

log = get_logger("mta")

VERIFY = "verify"


@dataclass(frozen=True)
class Prepared:
    """The message to queue (maybe changed), the fields to prepend, and a refusal if any."""

    message: bytes
    prepend: bytes = b""
    reject: Reply | None = None


def content_mode(settings, service: str, trusted: bool, auth_user: str | None) -> str | None:
    if service == "smtp" and not trusted and auth_user is None and settings.senderauth.check:
        return VERIFY
    return None


def start_spf(resolver, client_ip: str, sender: str, helo: str) -> asyncio.Future:
    """SPF at MAIL FROM (RFC 7208 §2.4), resolved in the background while RCPTs come in."""
    return asyncio.ensure_future(check_spf(resolver, client_ip, sender, helo))


async def verify(settings, resolver, *, client_ip: str, helo: str, sender: str,
                 message: bytes, spf_lookup: asyncio.Future | None) -> Prepared:
    hostname = settings.server.hostname
    message = authresults.strip_forged(message, hostname)   # RFC 8601 §5
    budget = max(5.0, settings.dns.timeout * 4)
    try:
        spf_result = await asyncio.wait_for(asyncio.shield(spf_lookup), budget) \
            if spf_lookup is not None else None
        verdict = await asyncio.wait_for(
            check_message(resolver, hostname, client_ip, helo, sender, message, spf_result),
            budget)
    except TimeoutError:
        event(log, "sender authentication timed out", client=client_ip)
        return Prepared(message)
    except Exception as exc:  # noqa: BLE001 - hostile input must not cost the message
        event(log, "sender authentication failed", client=client_ip, error=repr(exc))
        return Prepared(message)
    field = f"Authentication-Results: {verdict.header}\r\n".encode("utf-8", "replace")
    event(log, "sender authentication", client=client_ip, sender=f"<{sender}>",
          header=verdict.header)
    if verdict.reject and settings.dmarc.enforce:
        text = f"Message rejected: DMARC policy of {verdict.from_domain} says reject"
        return Prepared(message, field, replies.Reply(550, "5.7.1", text))
    return Prepared(message, field)
