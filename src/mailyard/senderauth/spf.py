"""SPF (RFC 7208), evaluated asynchronously through the project's resolver.

`await check_host(resolver, ip, domain, sender, helo)` → `SpfResult(result, explanation,
domain)`, where result is one of none, neutral, pass, fail, softfail, temperror, permerror
(RFC 7208 §2.6). Limits enforced: 10 DNS-querying terms (§4.6.4), 2 void lookups (§4.6.4),
10 MX / PTR names per lookup. Macros (§7) are expanded for domain-specs; `exp=` is fetched
only for a fail.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from mailyard.dns import BaseResolver, DnsError, DnsTemporaryError

RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
MAX_DNS_TERMS = 10
MAX_VOID_LOOKUPS = 2
MAX_NAMES = 10


@dataclass(frozen=True)
class SpfResult:
    result: str
    domain: str
    explanation: str = ""
    mechanism: str = ""


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


class _Ctx:
    def __init__(self, resolver: BaseResolver, ip: str, sender: str, helo: str):
        self.resolver = resolver
        self.ip = ipaddress.ip_address(ip)
        if isinstance(self.ip, ipaddress.IPv6Address) and self.ip.ipv4_mapped:
            self.ip = self.ip.ipv4_mapped
        self.sender = sender
        self.helo = helo
        self.dns_terms = 0
        self.void = 0

    def count_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _PermError("too many DNS lookups (RFC 7208 §4.6.4: at most 10)")

    async def lookup(self, name: str, rdtype: str) -> list[str]:
        try:
            answers = await self.resolver.lookup(name, rdtype)
        except DnsTemporaryError as exc:
            raise _TempError(str(exc)) from None
        except DnsError as exc:
            raise _PermError(str(exc)) from None
        if not answers:
            self.void += 1
            if self.void > MAX_VOID_LOOKUPS:
                raise _PermError("too many void lookups (RFC 7208 §4.6.4: at most 2)")
        return answers


def _sender_parts(sender: str, helo: str) -> tuple[str, str]:
    if not sender:
        return "postmaster", helo
    local, _, domain = sender.rpartition("@")
    return (local or "postmaster"), domain


_MACRO = re.compile(r"%\{([slodipvhcrtSLODIPVHCRT])(\d*)(r?)([.\-+,/_=]*)\}|%%|%_|%-")


def expand(ctx: _Ctx, spec: str, domain: str, exp: bool = False) -> str:
    """RFC 7208 §7 macro expansion."""
    local, sender_domain = _sender_parts(ctx.sender, ctx.helo)

    def value(letter: str) -> str:
        l = letter.lower()
        if l == "s":
            return f"{local}@{sender_domain}"
        if l == "l":
            return local
        if l == "o":
            return sender_domain
        if l == "d":
            return domain
        if l == "i":
            if ctx.ip.version == 4:
                return str(ctx.ip)
            return ".".join(ctx.ip.exploded.replace(":", ""))
        if l == "v":
            return "in-addr" if ctx.ip.version == 4 else "ip6"
        if l == "h":
            return ctx.helo
        if l == "p":
            return "unknown"
        if exp and l in "crt":
            return {"c": str(ctx.ip), "r": "unknown", "t": "0"}[l]
        raise _PermError(f"macro %{{{letter}}} not allowed here")

    def repl(m: re.Match) -> str:
        text = m.group(0)
        if text == "%%":
            return "%"
        if text == "%_":
            return " "
        if text == "%-":
            return "%20"
        letter, digits, reverse, delims = m.groups()
        parts = re.split("[" + re.escape(delims or ".") + "]", value(letter))
        if reverse:
            parts.reverse()
        if digits:
            n = int(digits)
            if n == 0:
                raise _PermError("macro transformer 0 is not allowed")
            parts = parts[-n:]
        return ".".join(parts)

    if re.search(r"%[^{%_-]", spec) or spec.endswith("%"):
        raise _PermError(f"bad macro in {spec!r}")
    return _MACRO.sub(repl, spec)


def _domain_spec(ctx: _Ctx, arg: str | None, domain: str) -> str:
    if not arg:
        return domain
    target = expand(ctx, arg, domain).rstrip(".")
    if not target or ".." in target:
        raise _PermError(f"bad domain-spec {arg!r}")
    return target


def _split_cidr(arg: str | None) -> tuple[str | None, int | None, int | None]:
    """`domain/24//64` → (domain, 24, 64)."""
    if arg is None:
        return None, None, None
    m = re.match(r"^(.*?)(?:/(\d+))?(?://(\d+))?$", arg)
    assert m
    spec, v4, v6 = m.group(1) or None, m.group(2), m.group(3)
    v4n = int(v4) if v4 is not None else None
    v6n = int(v6) if v6 is not None else None
    if (v4n is not None and v4n > 32) or (v6n is not None and v6n > 128):
        raise _PermError(f"bad CIDR length in {arg!r}")
    return spec, v4n, v6n


def _ip_in(ctx: _Ctx, addresses: list[str], v4: int | None, v6: int | None) -> bool:
    for a in addresses:
        try:
            net = ipaddress.ip_network(
                f"{a}/{(v4 if v4 is not None else 32) if ':' not in a else (v6 if v6 is not None else 128)}",
                strict=False)
        except ValueError:
            continue
        if net.version == ctx.ip.version and ctx.ip in net:
            return True
    return False


async def _get_record(ctx: _Ctx, domain: str) -> str | None:
    try:
        texts = await ctx.resolver.lookup(domain, "TXT")
    except DnsTemporaryError as exc:
        raise _TempError(str(exc)) from None
    except DnsError:
        return None
    records = [t for t in texts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(records) > 1:
        raise _PermError(f"{domain} publishes more than one SPF record")
    return records[0] if records else None


_TERM = re.compile(r"^([+\-~?]?)([a-z][a-z0-9_\-.]*)(?:([:=/])(.*))?$", re.IGNORECASE)


async def _check(ctx: _Ctx, domain: str, depth: int) -> tuple[str, str, str]:
    """(result, mechanism, explanation) for `domain`; raises _PermError / _TempError."""
    if depth > MAX_DNS_TERMS:
        raise _PermError("include/redirect loop")
    record = await _get_record(ctx, domain)
    if record is None:
        return "none", "", ""
    terms = record.split()[1:]
    redirect = exp = None
    mechanisms = []
    for term in terms:
        m = _TERM.match(term)
        if not m:
            raise _PermError(f"unparseable SPF term {term!r} in {domain}")
        qualifier, name, sep, arg = m.groups()
        name = name.lower()
        if sep == "=":
            if name == "redirect":
                if redirect is not None:
                    raise _PermError("redirect= given twice")
                redirect = arg
            elif name == "exp":
                exp = arg
            continue  # unknown modifiers are ignored (§6)
        if sep == "/":
            arg = "/" + (arg or "")
        elif sep == ":" and not arg:
            raise _PermError(f"empty argument in {term!r}")
        if name not in ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"):
            raise _PermError(f"unknown mechanism {name!r} in {domain}")
        mechanisms.append((QUALIFIERS[qualifier or "+"], name, arg, term))

    for result, name, arg, term in mechanisms:
        if await _matches(ctx, name, arg, domain, depth):
            explanation = ""
            if result == "fail" and exp:
                explanation = await _explanation(ctx, exp, domain)
            return result, term, explanation
    if redirect is not None:
        ctx.count_term()
        target = _domain_spec(ctx, redirect, domain)
        result, mech, explanation = await _check(ctx, target, depth + 1)
        if result == "none":
            raise _PermError(f"redirect target {target} has no SPF record")
        return result, mech, explanation
    return "neutral", "", ""


async def _matches(ctx: _Ctx, name: str, arg: str | None, domain: str, depth: int) -> bool:
    if name == "all":
        return True
    if name == "ip4" or name == "ip6":
        if not arg:
            raise _PermError(f"{name} needs an address")
        try:
            net = ipaddress.ip_network(arg, strict=False)
        except ValueError:
            raise _PermError(f"bad {name} argument {arg!r}") from None
        if (name == "ip4") != (net.version == 4):
            raise _PermError(f"{name}:{arg} has the wrong address family")
        return net.version == ctx.ip.version and ctx.ip in net
    ctx.count_term()
    if name == "include":
        target = _domain_spec(ctx, arg, domain)
        result, _, _ = await _check(ctx, target, depth + 1)
        if result == "pass":
            return True
        if result in ("fail", "softfail", "neutral"):
            return False
        if result == "temperror":
            raise _TempError(f"include:{target}")
        raise _PermError(f"include:{target} gave {result}")
    if name == "exists":
        target = _domain_spec(ctx, arg, domain)
        return bool(await ctx.lookup(target, "A"))
    spec, v4, v6 = _split_cidr(arg)
    target = _domain_spec(ctx, spec, domain)
    rdtype = "A" if ctx.ip.version == 4 else "AAAA"
    if name == "a":
        return _ip_in(ctx, await ctx.lookup(target, rdtype), v4, v6)
    if name == "mx":
        hosts = await ctx.lookup(target, "MX")
        if len(hosts) > MAX_NAMES:
            raise _PermError("more than 10 MX names (RFC 7208 §4.6.4)")
        for text in hosts:
            host = text.split()[-1].rstrip(".")
            if host and _ip_in(ctx, await ctx.resolver.lookup(host, rdtype), v4, v6):
                return True
        return False
    if name == "ptr":
        from mailyard.dns import reverse_name

        names = (await ctx.lookup(reverse_name(str(ctx.ip)), "PTR"))[:MAX_NAMES]
        for n in names:
            n = n.rstrip(".").lower()
            if n == target.lower() or n.endswith("." + target.lower()):
                if str(ctx.ip) in await ctx.resolver.lookup(n, rdtype):
                    return True
        return False
    return False


async def _explanation(ctx: _Ctx, exp: str, domain: str) -> str:
    try:
        target = _domain_spec(ctx, exp, domain)
        texts = await ctx.resolver.lookup(target, "TXT")
        if len(texts) == 1:
            return expand(ctx, texts[0], domain, exp=True)
    except (DnsError, _PermError, _TempError):
        pass
    return ""


async def check_host(resolver: BaseResolver, ip: str, domain: str, sender: str = "",
                     helo: str = "") -> SpfResult:
    """RFC 7208 §4: the SPF result for `ip` sending as `domain` (MAIL FROM or HELO)."""
    domain = domain.rstrip(".").lower()
    if not domain or "." not in domain or ".." in domain or len(domain) > 253:
        return SpfResult("none", domain, "no usable domain")
    try:
        ctx = _Ctx(resolver, ip, sender, helo)
    except ValueError:
        return SpfResult("permerror", domain, f"bad client address {ip!r}")
    try:
        result, mechanism, explanation = await _check(ctx, domain, 0)
        return SpfResult(result, domain, explanation, mechanism)
    except _TempError as exc:
        return SpfResult("temperror", domain, str(exc))
    except _PermError as exc:
        return SpfResult("permerror", domain, str(exc))
