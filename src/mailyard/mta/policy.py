"""The RCPT policy chain: blocklists, relay control, recipient existence, greylisting.

Contract: `RecipientPolicy.check(client, sender, recipient)` runs the steps below in this
order and returns a `CheckResult` naming the step that decided, its reply (None = accepted)
and a reason; every step's outcome is logged (`mta` logger, one line per step). A step may
only accept, refuse or pass to the next one; none changes the envelope.

1. dnsbl — client IP listed in a `[dnsbl] zones` zone → 554 5.7.1. Skipped for trusted
   networks, `[dnsbl] allowlist`, and authenticated clients; DNS failure fails open.
2. relay — authenticated or trusted client → accepted, any destination.
3. recipient — local domain: the address must resolve (user, alias, catch-all,
   plus-address) else 550 5.1.1; any other destination (incl. address literals) → 554 5.7.1
   Relay access denied. Local parts carrying routing characters (`@`, `%`, `!`) are refused
   here too: we never route on them, and refusing them keeps the open-relay matrix closed.
4. greylist — untrusted, unauthenticated → triplet check; 451 4.7.1 with a retry hint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
from dataclasses import dataclass

from mailyard.log import event, get_logger
from mailyard.mta.dnsbl import DnsblChecker, DnsblResult
from mailyard.mta.greylist import Greylist
from mailyard.smtp import replies
from mailyard.smtp.address import Path
from mailyard.smtp.replies import Reply

log = get_logger("mta")


@dataclass(frozen=True)
class ClientInfo:
    """What the policy knows about the connected client."""

    service: str
    ip: str
    trusted: bool
    auth_user: str | None = None
    helo: str | None = None
    tls: bool = False


@dataclass(frozen=True)
class CheckResult:
    """The decision for one recipient: `reply` None means accepted."""

    step: str
    reply: Reply | None
    reason: str

    @property
    def accepted(self) -> bool:
        return self.reply is None


class RecipientPolicy:
    """The chain above, with its collaborators injected (accounts, DNSBL, greylist)."""

    def __init__(self, settings, accounts, dnsbl: DnsblChecker | None,
                 greylist: Greylist | None):
        self.settings = settings
        self.accounts = accounts
        self.dnsbl = dnsbl
        self.greylist = greylist
        self.dnsbl_allowlist = [ipaddress.ip_network(n, strict=False)
                                for n in settings.dnsbl.allowlist]

    # -- step 1 helpers: the session starts the lookup early and passes the task in ----------
    def dnsbl_applies(self, client: ClientInfo) -> bool:
        if self.dnsbl is None or not self.dnsbl.zones or client.trusted or client.auth_user:
            return False
        try:
            addr = ipaddress.ip_address(client.ip)
        except ValueError:
            return False
        return not any(addr in net for net in self.dnsbl_allowlist)

    def start_dnsbl(self, client: ClientInfo) -> asyncio.Future | None:
        if not self.dnsbl_applies(client):
            return None
        return asyncio.ensure_future(self.dnsbl.check(client.ip))

    async def check(self, client: ClientInfo, sender: str, recipient: Path,
                    dnsbl_lookup: asyncio.Future | None = None) -> CheckResult:
        address = recipient.address
        result = await self._decide(client, sender, recipient, dnsbl_lookup)
        event(log, "rcpt check", service=client.service, client=client.ip,
              sender=f"<{sender}>", rcpt=f"<{address}>", step=result.step,
              result="accept" if result.accepted else result.reply.code,
              reason=result.reason)
        return result

    async def _decide(self, client: ClientInfo, sender: str, recipient: Path,
                      dnsbl_lookup: asyncio.Future | None) -> CheckResult:
        # 1. DNS blocklists
        if self.dnsbl_applies(client):
            lookup = dnsbl_lookup or asyncio.ensure_future(self.dnsbl.check(client.ip))
            listing: DnsblResult = await asyncio.shield(lookup)
            for error in listing.errors:
                event(log, "dnsbl lookup failed, failing open", client=client.ip, error=error)
            if listing.listed:
                text = (f"Service unavailable; client [{client.ip}] blocked using "
                        f"{listing.zone}")
                return CheckResult("dnsbl", replies.ACCESS_DENIED.with_text(text),
                                   f"listed in {listing.zone} ({listing.answer})")
        # 2. authenticated or trusted: relay anywhere
        if client.auth_user:
            return CheckResult("relay", None, f"authenticated as {client.auth_user}")
        if client.trusted:
            return CheckResult("relay", None, "trusted network")
        # 3. local recipient must exist; anything else is relaying
        mailbox = recipient.mailbox
        if mailbox is None:
            return CheckResult("recipient", replies.MAILBOX_UNKNOWN, "no mailbox")
        if any(c in mailbox.local for c in "@%!"):
            return CheckResult("recipient", replies.RELAY_DENIED,
                               "routing characters in local part")
        local_domain = (not mailbox.is_literal
                        and self.accounts.is_local_domain(mailbox.domain))
        if not local_domain:
            return CheckResult("recipient", replies.RELAY_DENIED,
                               f"{mailbox.domain} is not a local domain")
        if not self.accounts.resolve(recipient.address):
            return CheckResult("recipient", replies.MAILBOX_UNKNOWN, "unknown recipient")
        # 4. greylisting
        if self.greylist is not None and self.settings.greylist.enabled:
            try:
                decision = await asyncio.to_thread(self.greylist.check, client.ip, sender,
                                                   recipient.address)
            except sqlite3.Error as exc:   # a broken greylist store must not stop mail
                return CheckResult("greylist", None, f"greylist unavailable, failing open: "
                                   f"{exc}")
            if not decision.passed:
                wait = max(1, int(decision.retry_after + 0.999))
                text = f"Greylisted, please try again in {wait} seconds"
                return CheckResult("greylist", replies.GREYLISTED.with_text(text),
                                   decision.reason)
            return CheckResult("greylist", None, decision.reason)
        return CheckResult("recipient", None, "local recipient")
