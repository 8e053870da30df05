"""DKIM verification (RFC 6376) with dkimpy, keys fetched through our async resolver.

dkimpy's verifier is synchronous; we read each DKIM-Signature's `d=` and `s=`, fetch the
key records asynchronously, and hand dkimpy a lookup function that answers from what we
fetched, so the event loop never blocks on DNS.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import dkim

from mailyard.dns import BaseResolver, DnsError, DnsTemporaryError
from mailyard.message import field_name, header_fields, split_message

MAX_SIGNATURES = 5
_quiet = logging.getLogger("mailyard.senderauth.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(frozen=True)
class DkimResult:
    result: str             # pass, fail, neutral, temperror, permerror, none (RFC 8601)
    domain: str = ""        # d=
    selector: str = ""      # s=
    reason: str = ""


def _tags(value: bytes) -> dict[str, str]:
    out = {}
    for part in re.sub(rb"\s+", b"", value).split(b";"):
        if b"=" in part:
            k, _, v = part.partition(b"=")
            out[k.decode("ascii", "replace").lower()] = v.decode("ascii", "replace")
    return out


async def verify(resolver: BaseResolver, message: bytes) -> list[DkimResult]:
    """One result per DKIM-Signature (topmost first, at most 5); [] when unsigned."""
    block, _, _ = split_message(message)
    sigs = [f for f in header_fields(block) if field_name(f).lower() == b"dkim-signature"]
    results = []
    for index, field in enumerate(sigs[:MAX_SIGNATURES]):
        tags = _tags(field.split(b":", 1)[1])
        domain, selector = tags.get("d", ""), tags.get("s", "")
        if not domain or not selector:
            results.append(DkimResult("permerror", domain, selector, "missing d= or s="))
            continue
        name = f"{selector}._domainkey.{domain}"
        try:
            records = await resolver.lookup(name, "TXT")
        except DnsTemporaryError as exc:
            results.append(DkimResult("temperror", domain, selector, str(exc)))
            continue
        except DnsError as exc:
            results.append(DkimResult("permerror", domain, selector, str(exc)))
            continue
        if not records:
            results.append(DkimResult("permerror", domain, selector, f"no key at {name}"))
            continue
        key = records[0].encode()

        def dnsfunc(_name, timeout=5, _key=key):
            return _key

        try:
            d = dkim.DKIM(message, logger=_quiet, minkey=1024)
            ok = d.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.DKIMException as exc:
            results.append(DkimResult("permerror" if "key" in str(exc).lower() else "fail",
                                      domain, selector, str(exc)))
            continue
        except Exception as exc:  # dkimpy on hostile input: a failed signature, not a crash
            results.append(DkimResult("permerror", domain, selector,
                                      f"{type(exc).__name__}: {exc}"))
            continue
        results.append(DkimResult("pass" if ok else "fail", domain, selector,
                                  "" if ok else "signature did not verify"))
    return results
