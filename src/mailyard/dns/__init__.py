"""One async resolver for everything (DNSBL, MX, SPF, DKIM, DMARC, URIBL), injectable.

`Resolver.from_settings(settings)` queries `[dns] nameservers` (HOST:PORT each; empty = the
system's resolv.conf) with `[dns] timeout`. `StaticResolver` answers from a dict, for unit
tests of code that needs DNS without a server.

Answers are text: A/AAAA addresses, TXT strings joined per record (RFC 7208 §3.3), MX as
(preference, host) through `mx()`. NXDOMAIN and NODATA are an empty list; a timeout or
SERVFAIL raises `DnsTemporaryError`, so callers decide whether to fail open or defer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename


class DnsError(Exception):
    """A DNS problem."""


class DnsTemporaryError(DnsError):
    """Timeout, SERVFAIL or no reachable server: try again later."""


class DnsPermanentError(DnsError):
    """A malformed name or query that can never succeed."""


def _rdata_text(rdata) -> str:
    if rdata.rdtype == dns.rdatatype.TXT:
        return b"".join(rdata.strings).decode("utf-8", "replace")
    if rdata.rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {rdata.exchange.to_text()}"
    return rdata.to_text()


class BaseResolver:
    """The lookups everyone uses, built on `lookup(name, rdtype)`."""

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        raise NotImplementedError

    async def a(self, name: str) -> list[str]:
        return await self.lookup(name, "A")

    async def aaaa(self, name: str) -> list[str]:
        return await self.lookup(name, "AAAA")

    async def txt(self, name: str) -> list[str]:
        return await self.lookup(name, "TXT")

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """(preference, host) sorted by preference; host without the trailing dot."""
        out = []
        for text in await self.lookup(domain, "MX"):
            pref, _, host = text.partition(" ")
            out.append((int(pref), host.rstrip(".") if host != "." else "."))
        return sorted(out, key=lambda p: p[0])

    async def ptr(self, ip: str) -> list[str]:
        return [n.rstrip(".") for n in await self.lookup(reverse_name(ip), "PTR")]


def reverse_name(ip: str) -> str:
    """1.2.3.4 → 4.3.2.1.in-addr.arpa. (nibbles for IPv6)."""
    return dns.reversename.from_address(ip).to_text()


def dnsbl_name(ip: str, zone: str) -> str:
    """The name to query for `ip` in blocklist `zone` (reversed octets or nibbles)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        label = ".".join(reversed(str(addr).split(".")))
    else:
        label = ".".join(reversed(addr.exploded.replace(":", "")))
    return f"{label}.{zone.rstrip('.')}."


class Resolver(BaseResolver):
    """dnspython's async resolver on the configured nameservers."""

    def __init__(self, nameservers: Iterable[str] = (), timeout: float = 5.0):
        from mailyard.config import parse_hostport

        servers = list(nameservers)
        if servers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in (parse_hostport(s) for s in servers)]
        else:
            try:
                self._resolver = dns.asyncresolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                self._resolver = dns.asyncresolver.Resolver(configure=False)
                self._resolver.nameservers = ["127.0.0.1"]
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout
        self._resolver.cache = dns.resolver.LRUCache(50000)

    @classmethod
    def from_settings(cls, settings) -> Resolver:
        return cls(settings.dns.nameservers, settings.dns.timeout)

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        try:
            answer = await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.resolver.YXDOMAIN:
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from None
        except (dns.name.LabelTooLong, dns.name.NameTooLong, dns.name.EmptyLabel,
                dns.exception.SyntaxError) as exc:
            raise DnsPermanentError(f"{name} {rdtype}: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from None
        return [_rdata_text(r) for r in answer]


class StaticResolver(BaseResolver):
    """Answers from a dict `{("name.", "TYPE"): ["rdata text", ...]}`; for unit tests.

    A value of `DnsTemporaryError` (the class) makes that lookup fail temporarily.
    """

    def __init__(self, records: dict | None = None):
        self.records: dict[tuple[str, str], object] = {}
        self.queries: list[tuple[str, str]] = []
        for (name, rdtype), values in (records or {}).items():
            self.add(name, rdtype, values)

    def add(self, name: str, rdtype: str, values) -> None:
        key = (name.lower().rstrip(".") + ".", rdtype.upper())
        if isinstance(values, str):
            values = [values]
        self.records[key] = values

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        key = (name.lower().rstrip(".") + ".", rdtype.upper())
        self.queries.append(key)
        value = self.records.get(key, [])
        if value is DnsTemporaryError:
            raise DnsTemporaryError(f"{name} {rdtype}: simulated failure")
        return list(value)  # type: ignore[arg-type]
