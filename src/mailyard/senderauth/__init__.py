"""Sender authentication: SPF, DKIM, DMARC and Authentication-Results (pure, async DNS).

    spf = await spf.check_host(resolver, client_ip, mail_from_domain, sender, helo)
    dkims = await dkim_verify.verify(resolver, message)
    dmarc = await dmarc.evaluate(resolver, from_domain, spf, dkims)
    value = authresults.build(hostname, spf, dkims, dmarc, sender, helo)

`facts(spf, dkims, dmarc)` gives the spam engine the names it scores (SPF_PASS, DKIM_VALID…).
"""

from __future__ import annotations

from mailyard.senderauth import authresults, dkim_sign, dkim_verify, dmarc, spf
from mailyard.senderauth.dkim_verify import DkimResult
from mailyard.senderauth.dmarc import DmarcResult
from mailyard.senderauth.spf import SpfResult


def facts(spf_result: SpfResult | None, dkim_results: list[DkimResult],
          dmarc_result: DmarcResult | None) -> dict[str, str]:
    out = {}
    if spf_result is not None:
        out["spf"] = spf_result.result
    if dkim_results:
        out["dkim"] = "valid" if any(r.result == "pass" for r in dkim_results) else "invalid"
    if dmarc_result is not None:
        out["dmarc"] = dmarc_result.result
        out["dmarc_policy"] = dmarc_result.disposition
    return out


__all__ = [
    "DkimResult",
    "DmarcResult",
    "SpfResult",
    "authresults",
    "dkim_sign",
    "dkim_verify",
    "dmarc",
    "facts",
    "spf",
]
