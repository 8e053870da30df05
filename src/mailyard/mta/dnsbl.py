"""DNS blocklists for client IPs (RFC 5782), queried in parallel, failing open.

`DnsblChecker.check(ip)` looks the client up in every configured zone at once
(`4.3.2.1.zone` for IPv4, 32 reversed nibbles for IPv6, RFC 5782 §2.1/§2.4) and returns the
first listing whose answer passes that zone's return-code filter, or None. A zone that times
out or fails is skipped and reported in `DnsblResult.errors` (fail open: a broken blocklist
must not stop mail). The checker knows nothing of SMTP; the policy chain turns a listing
into `554 5.7.1`.
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

from mailyard.dns import DnsError, dnsbl_name

# Answers in 127.255.255.0/24 are Spamhaus-style error codes ("you queried through a public
# resolver", "rate limited"), never listings.
_DEFAULT_LISTED = ipaddress.ip_network("127.0.0.0/8")
_RESOLVER_ERRORS = ipaddress.ip_network("127.255.255.0/24")


@dataclass(frozen=True)
class Zone:
    """One blocklist: its DNS zone and the answers that mean "listed" (empty = default)."""

    name: str
    codes: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Zone:
        """`zone` or `zone=127.0.0.2,127.0.0.4/30` (the `[dnsbl] zones` syntax)."""
        name, _, codes = spec.partition("=")
        return cls(name.strip().rstrip(".").lower(),
                   tuple(ipaddress.ip_network(c.strip(), strict=False)
                         for c in codes.split(",") if c.strip()))

    def is_listing(self, answer: str) -> bool:
        try:
            addr = ipaddress.ip_address(answer)
        except ValueError:
            return False
        if self.codes:
            return any(addr in net for net in self.codes)
        return addr in _DEFAULT_LISTED and addr not in _RESOLVER_ERRORS


@dataclass(frozen=True)
class DnsblResult:
    """The outcome for one client: `zone`/`answer` set when listed; `errors` per zone."""

    zone: str | None = None
    answer: str | None = None
    errors: tuple[str, ...] = ()

    @property
    def listed(self) -> bool:
        return self.zone is not None


class DnsblChecker:
    """Queries `zones` through `resolver` (a `mailyard.dns` resolver) within `timeout`."""

    def __init__(self, zones: list[str], resolver, timeout: float):
        self.zones = [Zone.parse(z) for z in zones]
        self.resolver = resolver
        self.timeout = timeout

    async def _query(self, zone: Zone, ip: str) -> tuple[Zone, list[str] | None, str | None]:
        try:
            answers = await asyncio.wait_for(
                self.resolver.lookup(dnsbl_name(ip, zone.name), "A"), self.timeout)
            return zone, answers, None
        except TimeoutError:
            return zone, None, f"{zone.name}: timeout"
        except DnsError as exc:
            return zone, None, f"{zone.name}: {exc}"

    async def check(self, ip: str) -> DnsblResult:
        if not self.zones:
            return DnsblResult()
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return DnsblResult(errors=(f"not an IP address: {ip!r}",))
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            ip = str(addr.ipv4_mapped)
        results = await asyncio.gather(*(self._query(z, ip) for z in self.zones))
        errors = tuple(err for _, _, err in results if err)
        for zone, answers, _ in results:       # in configured order: the first listing wins
            for answer in answers or ():
                if zone.is_listing(answer):
                    return DnsblResult(zone.name, answer, errors)
        return DnsblResult(errors=errors)
