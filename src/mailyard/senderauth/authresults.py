"""Authentication-Results (RFC 8601): build ours, drop forged ones claiming our authserv-id."""

from __future__ import annotations

import re

from mailyard.message import field_name, header_fields, split_message
from mailyard.senderauth.dkim_verify import DkimResult
from mailyard.senderauth.dmarc import DmarcResult
from mailyard.senderauth.spf import SpfResult


def _ptype_value(value: str) -> str:
    # RFC 8601 §2.2 values are tokens or quoted strings; quote whatever is not a plain token.
    if re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-./=?^_`{|}~@]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def build(authserv_id: str, spf: SpfResult | None, dkim: list[DkimResult],
          dmarc: DmarcResult | None, envelope_sender: str = "", helo: str = "",
          from_domain: str = "") -> str:
    """The field value: `mx.example; spf=pass smtp.mailfrom=a@b; dkim=pass header.d=b; ...`."""
    parts = [authserv_id]
    if spf is not None:
        prop = (f"smtp.mailfrom={_ptype_value(envelope_sender)}" if envelope_sender
                else f"smtp.helo={_ptype_value(helo or spf.domain)}")
        parts.append(f"spf={spf.result} {prop}")
    if dkim:
        for r in dkim:
            parts.append(f"dkim={r.result} header.d={_ptype_value(r.domain or 'unknown')}"
                         + (f" header.s={_ptype_value(r.selector)}" if r.selector else ""))
    else:
        parts.append("dkim=none")
    if dmarc is not None:
        parts.append(f"dmarc={dmarc.result}"
                     + (f" (p={dmarc.policy})" if dmarc.result != "none" else "")
                     + f" header.from={_ptype_value(dmarc.domain or from_domain or 'unknown')}")
    return "; ".join(parts)


def strip_forged(message: bytes, authserv_id: str) -> bytes:
    """Remove incoming Authentication-Results fields that claim to be ours (RFC 8601 §5)."""
    block, blank, body = split_message(message)
    kept = []
    removed = False
    for field in header_fields(block):
        if field_name(field).lower() == b"authentication-results":
            value = field.split(b":", 1)[1].decode("utf-8", "replace")
            value = re.sub(r"\([^)]*\)", " ", value).strip()
            ident = re.split(r"[\s;]", value, maxsplit=1)[0].lower()
            if ident == authserv_id.lower():
                removed = True
                continue
        kept.append(field)
    if not removed:
        return message
    return b"".join(kept) + blank + body
