"""DMARC (RFC 7489): policy discovery, identifier alignment, the disposition.

`await evaluate(resolver, from_domain, spf, dkim_results)` → `DmarcResult`. The organisational
domain comes from the public suffix list (publicsuffixlist). `pct` is honoured by sampling.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from mailyard.dns import BaseResolver, DnsError, DnsTemporaryError
from mailyard.senderauth.dkim_verify import DkimResult
from mailyard.senderauth.spf import SpfResult


@dataclass(frozen=True)
class DmarcResult:
    result: str                  # pass, fail, none, temperror, permerror
    policy: str = "none"         # none, quarantine, reject — what applies to this message
    domain: str = ""
    reason: str = ""

    @property
    def disposition(self) -> str:
        return self.policy if self.result == "fail" else "none"


@lru_cache(maxsize=1)
def _psl():
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    org = _psl().privatesuffix(domain)
    return org or domain


def _aligned(a: str, b: str, strict: bool) -> bool:
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if strict:
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def parse_record(text: str) -> dict[str, str] | None:
    tags = {}
    for part in text.split(";"):
        if "=" in part:
            k, _, v = part.partition("=")
            tags[k.strip().lower()] = v.strip()
    if tags.get("v") != "DMARC1" or not text.strip().startswith("v"):
        return None
    return tags


async def _fetch(resolver: BaseResolver, domain: str) -> dict[str, str] | None:
    records = [t for t in await resolver.lookup(f"_dmarc.{domain}", "TXT")
               if t.replace(" ", "").lower().startswith("v=dmarc1")]
    if len(records) != 1:
        return None
    return parse_record(records[0])


async def evaluate(resolver: BaseResolver, from_domain: str, spf: SpfResult | None,
                   dkim_results: list[DkimResult], rng: random.Random | None = None
                   ) -> DmarcResult:
    from_domain = from_domain.lower().rstrip(".")
    if not from_domain or "." not in from_domain:
        return DmarcResult("none", reason="no RFC5322.From domain")
    try:
        record = await _fetch(resolver, from_domain)
        org = organizational_domain(from_domain)
        subdomain = False
        if record is None and org != from_domain:
            record = await _fetch(resolver, org)
            subdomain = record is not None
    except DnsTemporaryError as exc:
        return DmarcResult("temperror", domain=from_domain, reason=str(exc))
    except DnsError as exc:
        return DmarcResult("permerror", domain=from_domain, reason=str(exc))
    if record is None:
        return DmarcResult("none", domain=from_domain, reason="no DMARC record")
    policy = record.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return DmarcResult("permerror", domain=from_domain, reason=f"bad p={policy!r}")
    if subdomain and record.get("sp", "").lower() in ("none", "quarantine", "reject"):
        policy = record["sp"].lower()
    strict_spf = record.get("aspf", "r").lower() == "s"
    strict_dkim = record.get("adkim", "r").lower() == "s"
    dkim_ok = any(r.result == "pass" and _aligned(r.domain, from_domain, strict_dkim)
                  for r in dkim_results)
    spf_ok = spf is not None and spf.result == "pass" and \
        _aligned(spf.domain, from_domain, strict_spf)
    if dkim_ok or spf_ok:
        return DmarcResult("pass", policy, from_domain,
                           "aligned DKIM" if dkim_ok else "aligned SPF")
    try:
        pct = int(record.get("pct", "100"))
    except ValueError:
        pct = 100
    applied = policy
    if pct < 100 and (rng or random).randrange(100) >= pct:
        applied = "none" if policy == "quarantine" else "quarantine"
    return DmarcResult("fail", applied, from_domain, "no aligned SPF or DKIM pass")
