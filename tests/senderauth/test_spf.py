"""SPF (RFC 7208): table-driven cases, with pyspf as the oracle on the same records."""

from __future__ import annotations

import pytest
import spf as pyspf

from mailyard.dns import DnsTemporaryError, StaticResolver
from mailyard.senderauth.spf import check_host

RECORDS = {
    ("example.test", "TXT"): ["v=spf1 ip4:192.0.2.0/24 a mx include:inc.test -all"],
    ("example.test", "A"): ["198.51.100.7"],
    ("example.test", "MX"): ["10 mx.example.test."],
    ("mx.example.test", "A"): ["198.51.100.25"],
    ("inc.test", "TXT"): ["v=spf1 ip6:2001:db8::/32 ~all"],
    ("soft.test", "TXT"): ["v=spf1 ~all"],
    ("neutral.test", "TXT"): ["v=spf1 ?all"],
    ("redir.test", "TXT"): ["v=spf1 redirect=example.test"],
    ("two.test", "TXT"): ["v=spf1 -all", "v=spf1 +all"],
    ("bad.test", "TXT"): ["v=spf1 ip4:300.1.1.1 -all"],
    ("unknownmech.test", "TXT"): ["v=spf1 foo:bar -all"],
    ("exists.test", "TXT"): ["v=spf1 exists:%{i}.allow.test -all"],
    ("192.0.2.99.allow.test", "A"): ["127.0.0.2"],
    ("macro.test", "TXT"): ["v=spf1 a:%{l}.users.macro.test -all"],
    ("alice.users.macro.test", "A"): ["203.0.113.5"],
    ("cidr.test", "TXT"): ["v=spf1 a:host.cidr.test/24 -all"],
    ("host.cidr.test", "A"): ["203.0.113.1"],
    ("loop.test", "TXT"): ["v=spf1 include:loop.test -all"],
    ("many.test", "TXT"): ["v=spf1 " + " ".join(f"a:h{i}.many.test" for i in range(12))
                           + " -all"],
    ("noise.test", "TXT"): ["some other text", "v=spf1 ip4:192.0.2.1 -all"],
    ("void.test", "TXT"): ["v=spf1 a:v1.void.test a:v2.void.test a:v3.void.test -all"],
    ("temp.test", "TXT"): DnsTemporaryError,
}

CASES = [
    ("192.0.2.10", "example.test", "pass"),
    ("198.51.100.7", "example.test", "pass"),       # a
    ("198.51.100.25", "example.test", "pass"),      # mx
    ("2001:db8::1", "example.test", "pass"),        # include → ip6
    ("203.0.113.9", "example.test", "fail"),
    ("203.0.113.9", "soft.test", "softfail"),
    ("203.0.113.9", "neutral.test", "neutral"),
    ("192.0.2.10", "redir.test", "pass"),
    ("203.0.113.9", "redir.test", "fail"),
    ("203.0.113.9", "nospf.test", "none"),
    ("203.0.113.9", "two.test", "permerror"),
    ("203.0.113.9", "unknownmech.test", "permerror"),
    ("192.0.2.99", "exists.test", "pass"),
    ("192.0.2.98", "exists.test", "fail"),
    ("203.0.113.5", "macro.test", "pass"),
    ("203.0.113.200", "cidr.test", "pass"),
    ("203.0.114.1", "cidr.test", "fail"),
    ("203.0.113.9", "loop.test", "permerror"),
    ("203.0.113.9", "many.test", "permerror"),
    ("192.0.2.1", "noise.test", "pass"),
    ("203.0.113.9", "void.test", "permerror"),
]


def _resolver():
    return StaticResolver(RECORDS)


@pytest.mark.parametrize("ip, domain, expected", CASES)
async def test_spf_cases(ip, domain, expected):
    result = await check_host(_resolver(), ip, domain, sender=f"alice@{domain}", helo="h.test")
    assert result.result == expected, result


async def test_temporary_dns_error_is_temperror():
    result = await check_host(_resolver(), "192.0.2.1", "temp.test", "a@temp.test")
    assert result.result == "temperror"


async def test_bad_ip_literal_is_permerror():
    result = await check_host(_resolver(), "192.0.2.1", "bad.test", "a@bad.test")
    assert result.result == "permerror"


def _pyspf_lookup(name, qtype, tcpfallback=True, timeout=30):
    values = RECORDS.get((name.rstrip(".").lower(), qtype), [])
    if values is DnsTemporaryError:
        raise pyspf.TempError("DNS timeout")
    out = []
    for v in values:
        if qtype == "TXT":
            out.append(((name, qtype), [v.encode()]))
        elif qtype == "MX":
            pref, host = v.split()
            out.append(((name, qtype), (int(pref), host.rstrip("."))))
        else:
            out.append(((name, qtype), v))
    return out


@pytest.mark.parametrize("ip, domain, expected", [c for c in CASES
                                                   if c[1] not in ("void.test",)])
async def test_agrees_with_pyspf(monkeypatch, ip, domain, expected):
    monkeypatch.setattr(pyspf, "DNSLookup", _pyspf_lookup)
    oracle, _ = pyspf.check2(i=ip, s=f"alice@{domain}", h="h.test")
    ours = await check_host(_resolver(), ip, domain, sender=f"alice@{domain}", helo="h.test")
    assert ours.result == oracle
