"""Routing: where a queued message goes next. Pure functions, no I/O.

Two stages (DESIGN.md, "The path of one message"):

- **filter**: mail that arrived from the outside (the `smtp`, `submission` and
  `submissions` listeners) goes, with all its recipients in one transaction, to the content
  filter at `[filter] next_hop`. The filter scans it and reinjects it on `reinject`.
- **final**: mail that came back on `reinject`, mail released from quarantine
  (`skip_scan`), and mail we made ourselves (bounces, Sieve redirects and vacation replies,
  `received_via` "internal") is delivered: recipients in local domains over LMTP to the
  delivery listener, every other recipient over SMTP to its domain's MX, one transaction
  per domain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

FILTER = "filter"
FINAL = "final"

# Hop kinds.
HOP_FILTER = "filter"
HOP_LMTP = "lmtp"
HOP_SMTP = "smtp"

# The listeners whose mail must be scanned before delivery.
SCANNED_SERVICES = frozenset({"smtp", "submission", "submissions"})
INTERNAL = "internal"      # received_via of mail the server generates itself


@dataclass(frozen=True)
class Hop:
    """One delivery transaction: a kind, where to (HOST:PORT, or a domain for SMTP), whom."""

    kind: str
    destination: str
    recipients: tuple[str, ...]


def stage_for(received_via: str, skip_scan: bool, filter_address: str) -> str:
    """The stage a new entry starts in. Without a filter configured, mail goes straight to
    final delivery (the operator turned scanning off)."""
    if received_via in SCANNED_SERVICES and not skip_scan and filter_address:
        return FILTER
    return FINAL


def domain_of(address: str) -> str:
    """The domain part, lower-cased, without a trailing dot ("" for a bare local part)."""
    _, at, domain = address.rpartition("@")
    return domain.rstrip(".").lower() if at else ""


def plan(stage: str, recipients: Iterable[str], is_local_domain: Callable[[str], bool],
         filter_address: str, lmtp_address: str) -> list[Hop]:
    """The hops that deliver `recipients` (those still pending) from `stage`.

    Order is stable: the filter hop alone; else LMTP first, then remote domains in the
    order they first appear. A domain-less address is treated as local (RFC 5321 §4.1.1.3
    allows only "postmaster" that way).
    """
    recipients = list(recipients)
    if not recipients:
        return []
    if stage == FILTER:
        return [Hop(HOP_FILTER, filter_address, tuple(recipients))]
    local: list[str] = []
    remote: dict[str, list[str]] = {}
    for address in recipients:
        domain = domain_of(address)
        if not domain or is_local_domain(domain):
            local.append(address)
        else:
            remote.setdefault(domain, []).append(address)
    hops = []
    if local:
        hops.append(Hop(HOP_LMTP, lmtp_address, tuple(local)))
    for domain, addresses in remote.items():
        hops.append(Hop(HOP_SMTP, domain, tuple(addresses)))
    return hops


def retry_delay(attempts: int, initial: float, maximum: float) -> float:
    """Exponential back-off: `initial` after the first failure, doubling, capped."""
    if attempts < 1:
        return 0.0
    return min(initial * (2 ** min(attempts - 1, 60)), maximum)
