"""The client's forward-confirmed reverse DNS name (FCrDNS), for Received: and the filter.

`confirmed_name(resolver, ip)` asks PTR for the address, then A/AAAA for each name (at most
a few) and returns the first name that resolves back to the address, or "" (no PTR, no
match, DNS trouble). It never raises: a missing name is information, not an error.
"""

from __future__ import annotations

import asyncio
import ipaddress

from mailyard.dns import DnsError

MAX_NAMES = 3


async def confirmed_name(resolver, ip: str, timeout: float) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ""
    rdtype = "A" if addr.version == 4 else "AAAA"
    try:
        async with asyncio.timeout(timeout):
            for name in (await resolver.ptr(ip))[:MAX_NAMES]:
                if not name:
                    continue
                answers = await resolver.lookup(name, rdtype)
                if any(_same(a, addr) for a in answers):
                    return name.rstrip(".").lower()
    except (DnsError, TimeoutError):
        return ""
    return ""


def _same(text: str, addr) -> bool:
    try:
        return ipaddress.ip_address(text) == addr
    except ValueError:
        return False
