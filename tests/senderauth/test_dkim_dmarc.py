"""DKIM sign/verify round trip through DNS, tampering, DMARC alignment and policy."""

from __future__ import annotations

import random

import pytest

from mailyard.dns import StaticResolver
from mailyard.senderauth import authresults, dkim_sign, dkim_verify, dmarc, facts
from mailyard.senderauth.spf import SpfResult

MESSAGE = (b"From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\n"
           b"Subject: hello\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <1@example.test>\r\n\r\nHello Bob.\r\n")


@pytest.fixture
def signed(tmp_path):
    selector, record = dkim_sign.generate(tmp_path, "example.test", "s1", bits=1024)
    resolver = StaticResolver({(f"{selector}._domainkey.example.test", "TXT"): [record]})
    return dkim_sign.sign(MESSAGE, tmp_path, "example.test"), resolver


async def test_signed_message_verifies(signed):
    message, resolver = signed
    assert message.startswith(b"DKIM-Signature:")
    results = await dkim_verify.verify(resolver, message)
    assert [(r.result, r.domain, r.selector) for r in results] == [("pass", "example.test",
                                                                    "s1")]


async def test_tampered_message_fails(signed):
    message, resolver = signed
    tampered = message.replace(b"Hello Bob.", b"Send money.")
    assert [r.result for r in await dkim_verify.verify(resolver, tampered)] == ["fail"]


async def test_missing_key_and_garbage_signature():
    resolver = StaticResolver()
    no_key = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==; b=AA==\r\n" \
        + MESSAGE
    assert [r.result for r in await dkim_verify.verify(resolver, no_key)] == ["permerror"]
    garbage = b"DKIM-Signature: \x00\xff;;;==\r\n" + MESSAGE
    assert [r.result for r in await dkim_verify.verify(resolver, garbage)] == ["permerror"]
    assert await dkim_verify.verify(resolver, MESSAGE) == []


def test_key_rotation_by_selector(tmp_path):
    dkim_sign.generate(tmp_path, "example.test", "old")
    with pytest.raises(dkim_sign.DkimKeyError):
        dkim_sign.generate(tmp_path, "example.test", "old")
    dkim_sign.generate(tmp_path, "example.test", "new", activate=False)
    assert dkim_sign.active_key(tmp_path, "example.test")[0] == "old"
    dkim_sign.activate(tmp_path, "example.test", "new")
    assert dkim_sign.active_key(tmp_path, "example.test")[0] == "new"


DMARC = {("_dmarc.example.test", "TXT"): ["v=DMARC1; p=reject; adkim=s"],
         ("_dmarc.relaxed.test", "TXT"): ["v=DMARC1; p=quarantine"],
         ("_dmarc.broken.test", "TXT"): ["v=DMARC1; p=maybe"]}


async def test_dmarc_pass_via_aligned_dkim():
    from mailyard.senderauth.dkim_verify import DkimResult

    r = await dmarc.evaluate(StaticResolver(DMARC), "example.test", None,
                             [DkimResult("pass", "example.test", "s1")])
    assert (r.result, r.disposition) == ("pass", "none")


async def test_dmarc_strict_alignment_and_reject():
    from mailyard.senderauth.dkim_verify import DkimResult

    r = await dmarc.evaluate(StaticResolver(DMARC), "example.test",
                             SpfResult("pass", "other.test"),
                             [DkimResult("pass", "sub.example.test", "s1")])
    assert (r.result, r.disposition) == ("fail", "reject")


async def test_dmarc_relaxed_spf_alignment_on_subdomain():
    r = await dmarc.evaluate(StaticResolver(DMARC), "news.relaxed.test",
                             SpfResult("pass", "bounce.relaxed.test"), [])
    assert r.result == "pass"
    r = await dmarc.evaluate(StaticResolver(DMARC), "news.relaxed.test",
                             SpfResult("fail", "bounce.relaxed.test"), [],
                             rng=random.Random(1))
    assert (r.result, r.disposition) == ("fail", "quarantine")


async def test_dmarc_none_and_permerror():
    assert (await dmarc.evaluate(StaticResolver(DMARC), "nodmarc.test", None, [])).result \
        == "none"
    assert (await dmarc.evaluate(StaticResolver(DMARC), "broken.test", None, [])).result \
        == "permerror"


def test_authentication_results_and_forgery_removal():
    from mailyard.senderauth.dkim_verify import DkimResult

    value = authresults.build("mx.example.test", SpfResult("pass", "example.test"),
                              [DkimResult("pass", "example.test", "s1")],
                              dmarc.DmarcResult("pass", "reject", "example.test"),
                              "alice@example.test")
    assert value == ("mx.example.test; spf=pass smtp.mailfrom=alice@example.test; "
                     "dkim=pass header.d=example.test header.s=s1; "
                     "dmarc=pass (p=reject) header.from=example.test")
    forged = (b"Authentication-Results: MX.example.test; spf=pass\r\n"
              b"Authentication-Results: other.test; dkim=fail\r\n" + MESSAGE)
    cleaned = authresults.strip_forged(forged, "mx.example.test")
    assert b"MX.example.test; spf=pass" not in cleaned
    assert b"other.test; dkim=fail" in cleaned
    assert facts(SpfResult("softfail", "x"), [], None) == {"spf": "softfail"}


def test_cli_generate_and_dns_records(tmp_path):
    import json
    import subprocess
    import sys

    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[server]\nhostname = "mx.example.test"\ndata_dir = "{tmp_path}/d"\n')
    def run(*a):
        return subprocess.run([sys.executable, "-m", "mailyard", "-c", str(cfg), *a],
                              capture_output=True, text=True)
    r = run("dkim", "generate", "example.test", "--selector", "s2026")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('s2026._domainkey.example.test. IN TXT "v=DKIM1; k=rsa; p=')
    r = run("dns-records", "example.test", "--json")
    recs = {(x["name"], x["type"]): x["value"] for x in json.loads(r.stdout)["records"]}
    assert recs[("example.test.", "MX")] == "10 mx.example.test."
    assert recs[("s2026._domainkey.example.test.", "TXT")].startswith("v=DKIM1; k=rsa; p=")
    assert recs[("_dmarc.example.test.", "TXT")].startswith("v=DMARC1;")
    r = run("dkim", "generate", "example.test", "--selector", "s2026")
    assert r.returncode == 1 and "exists" in r.stderr


async def test_check_message_end_to_end(signed):
    from mailyard.senderauth.verdict import check_message

    message, resolver = signed
    resolver.add("example.test", "TXT", ["v=spf1 ip4:192.0.2.0/24 -all"])
    resolver.add("_dmarc.example.test", "TXT", ["v=DMARC1; p=reject"])
    v = await check_message(resolver, "mx.example.test", "203.0.113.1", "h.test",
                            "alice@example.test", message)
    assert v.spf.result == "fail" and v.dkim[0].result == "pass"
    assert v.dmarc.result == "pass" and not v.reject
    assert v.facts == {"spf": "fail", "dkim": "valid", "dmarc": "pass", "dmarc_policy": "none"}
    forged = message.replace(b"Hello Bob.", b"Pay now.")
    v = await check_message(resolver, "mx.example.test", "203.0.113.1", "h.test",
                            "alice@example.test", forged)
    assert v.dmarc.result == "fail" and v.reject
    assert v.header.startswith("mx.example.test; spf=fail")
