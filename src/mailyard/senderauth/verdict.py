"""The MTA's one call per message: SPF (from MAIL FROM or HELO), DKIM, DMARC → a verdict.

    spf_result = await check_spf(resolver, client_ip, sender, helo)        # at MAIL FROM
    verdict = await check_message(resolver, authserv_id, client_ip, helo, sender, message,
                                  spf_result)                            # after DATA
    verdict.header      # the Authentication-Results value to prepend
    verdict.reject      # True when DMARC says p=reject (enforced if [dmarc] enforce)
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import getaddresses

from mailyard.dns import BaseResolver
from mailyard.message import get_header
from mailyard.senderauth import authresults, dkim_verify, dmarc, spf
from mailyard.senderauth.dkim_verify import DkimResult
from mailyard.senderauth.dmarc import DmarcResult
from mailyard.senderauth.spf import SpfResult


@dataclass(frozen=True)
class SenderAuthVerdict:
    spf: SpfResult | None
    dkim: tuple[DkimResult, ...]
    dmarc: DmarcResult | None
    header: str
    from_domain: str

    @property
    def reject(self) -> bool:
        return self.dmarc is not None and self.dmarc.disposition == "reject"

    @property
    def facts(self) -> dict[str, str]:
        from mailyard.senderauth import facts

        return facts(self.spf, list(self.dkim), self.dmarc)


async def check_spf(resolver: BaseResolver, client_ip: str, sender: str,
                    helo: str) -> SpfResult:
    """RFC 7208 §2.4: check MAIL FROM's domain; for the null sender, the HELO name."""
    domain = sender.rpartition("@")[2] if sender else helo
    return await spf.check_host(resolver, client_ip, domain, sender, helo)


def from_domain(message: bytes) -> str:
    """The RFC5322.From domain (DMARC's identifier); "" when there is not exactly one."""
    values = get_header(message, "From")
    if len(values) != 1:
        return ""
    addresses = [a for _, a in getaddresses(values) if "@" in a]
    if len(addresses) != 1:
        return ""
    return addresses[0].rpartition("@")[2].strip().lower().rstrip(">")


async def check_message(resolver: BaseResolver, authserv_id: str, client_ip: str, helo: str,
                        sender: str, message: bytes,
                        spf_result: SpfResult | None = None) -> SenderAuthVerdict:
    if spf_result is None:
        spf_result = await check_spf(resolver, client_ip, sender, helo)
    dkim_results = await dkim_verify.verify(resolver, message)
    domain = from_domain(message)
    dmarc_result = await dmarc.evaluate(resolver, domain, spf_result, dkim_results) \
        if domain else DmarcResult("none", reason="no single RFC5322.From domain")
    header = authresults.build(authserv_id, spf_result, dkim_results, dmarc_result, sender,
                               helo, domain)
    return SenderAuthVerdict(spf_result, tuple(dkim_results), dmarc_result, header, domain)
