"""The relay path from the Received headers, and the trust boundary, as SpamAssassin rules see it.

Theory of operation: each Received header (newest first) is parsed into a `Relay` — the
connecting host's IP, its reverse DNS name as the receiving MTA recorded it (`rdns`), the name
it gave in HELO, the receiving host (`by`), ident, envelope sender, queue id and any
authentication token. Headers that record no network hop (local submission, `qmail invoked`,
fetchmail's POP/IMAP pickup) are skipped; a `from` header with an address we cannot read is
counted as unparseable. Then the trust boundary is inferred the way SpamAssassin documents it
when no `trusted_networks` is configured: 127/8 and ::1 are always trusted; walking from the
newest relay, a host with a private (RFC 1918) address is trusted, as is one that
authenticated after a trusted one; the first other host and all hosts before it are
untrusted. With no `internal_networks` either, the internal set is the trusted set.

Rules read the result through SpamAssassin's pseudo-headers `X-Spam-Relays-Trusted`,
`-Untrusted`, `-Internal` and `-External`: a space-separated list of
`[ ip=… rdns=… helo=… by=… ident=… envfrom=… intl=0|1 id=… auth=… msa=0 ]`, newest first
(the TrustedRelays format), which is what `RDNS_NONE`, `HELO_NO_DOMAIN` and friends match.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_RECEIVED = 50

_IPV4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_IPV6 = r"(?:IPv6:)?[0-9a-fA-F]*:[0-9a-fA-F:.]+"
_IP = rf"(?:{_IPV4}|{_IPV6})"
_BY = re.compile(r"(?:^|[\s)])by\s+([^\s;()\[\]]+)", re.IGNORECASE)
_ID = re.compile(r"\bid\s+<?([^\s;<>()]+)", re.IGNORECASE)
_ENVFROM = re.compile(r"\(envelope-(?:from|sender)\s+<?([^\s>)]*)>?", re.IGNORECASE)
_AUTH_WITH = re.compile(r"\bwith\s+(E?SMTPS?A|LMTPS?A|asmtp)\b", re.IGNORECASE)
_AUTH_OTHER = re.compile(r"\((?:authenticated|authenticated sender|auth=\S+)|"
                         r"\bAuthenticated sender:", re.IGNORECASE)
_SKIP = re.compile(r"^\(?(?:qmail|cpmta|from\s+\S+@\S*\)|from\s+userid\b)|"
                   r"\bwith\s+(?:POP3|IMAP|ESMTP)?\s*\(fetchmail|"
                   r"\bby\s+\S+\s+with\s+(?:POP3|IMAP)\b|"
                   r"^from\s+\S*\s*by\s+\S+\s+\(Postfix,\s+from\s+userid", re.IGNORECASE)
_BRACKET_IP = re.compile(rf"\[({_IP})\](?::\d+)?")
_PAREN_IP = re.compile(rf"\((?:[^()\s]*@)?({_IP})\)")
_QMAIL_HELO = re.compile(r"\(HELO\s+([^\s)]*)\)", re.IGNORECASE)
_EXIM_HELO = re.compile(r"\bhelo=([^\s)\]]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Relay:
    """One network hop, as the receiving MTA recorded it."""

    ip: str
    rdns: str = ""
    helo: str = ""
    by: str = ""
    ident: str = ""
    envfrom: str = ""
    id: str = ""
    auth: str = ""
    trusted: bool = False
    internal: bool = False
    index: int = 0          # which Received header (0 = newest) recorded this hop

    def text(self) -> str:
        return (f"[ ip={self.ip} rdns={self.rdns} helo={self.helo} by={self.by} "
                f"ident={self.ident} envfrom={self.envfrom} intl={int(self.internal)} "
                f"id={self.id} auth={self.auth} msa=0 ]")


@dataclass(frozen=True)
class RelayPath:
    """All parsed relays, newest first, split at the trust boundary."""

    relays: tuple[Relay, ...]
    unparseable: int

    @property
    def boundary_index(self) -> int | None:
        """The Received header our side wrote on taking the message from the outside (the
        first untrusted hop's), else the oldest parsed hop's; None without parsed hops."""
        untrusted = self.untrusted
        if untrusted:
            return untrusted[0].index
        return self.relays[-1].index if self.relays else None

    @property
    def trusted(self) -> list[Relay]:
        return [r for r in self.relays if r.trusted]

    @property
    def untrusted(self) -> list[Relay]:
        return [r for r in self.relays if not r.trusted]

    @property
    def internal(self) -> list[Relay]:
        return [r for r in self.relays if r.internal]

    @property
    def external(self) -> list[Relay]:
        return [r for r in self.relays if not r.internal]

    def pseudo_header(self, which: str) -> str:
        """The X-Spam-Relays-`which` value (Trusted, Untrusted, Internal, External)."""
        chosen = getattr(self, which.lower())
        return " ".join(r.text() for r in chosen)


def _clean_ip(ip: str) -> str:
    return ip[5:] if ip.lower().startswith("ipv6:") else ip


def _valid_ip(ip: str) -> bool:
    try:
        ipaddress.ip_address(_clean_ip(ip))
        return True
    except ValueError:
        return False


def _name(token: str) -> str:
    """A host name as recorded: no brackets, no trailing dot; 'unknown' or an IP is none."""
    token = token.strip().strip("[]").rstrip(".")
    if token.lower() in ("unknown", "", "may", "helo"):
        return ""
    return token


def parse_received(value: str) -> Relay | None | bool:
    """A Relay; None for a header that records no network hop; False if unparseable."""
    text = " ".join(value.split())
    if _SKIP.search(text):
        return None
    if not text.lower().startswith("from "):
        return None
    rest = text[5:]
    by_match = _BY.search(rest)
    head = rest[:by_match.start()] if by_match else rest.split(";")[0]
    by = by_match.group(1).rstrip(".") if by_match else ""
    tail = rest[by_match.end():] if by_match else ""
    idm = _ID.search(tail)
    envm = _ENVFROM.search(text)
    authm = _AUTH_WITH.search(tail)
    auth = authm.group(1) if authm else ("authenticated" if _AUTH_OTHER.search(text) else "")
    first = head.split(" ", 1)[0] if head else ""
    ip = rdns = helo = ident = ""
    qmail = _QMAIL_HELO.search(head)
    exim = _EXIM_HELO.search(head)
    brackets = list(_BRACKET_IP.finditer(head))
    # "[helo-ip] ([ip])": the literal HELO comes first, the connecting address in parentheses
    bracket = brackets[1] if len(brackets) > 1 and brackets[0].start() == 0 else \
        (brackets[0] if brackets else None)
    paren = _PAREN_IP.search(head)
    if bracket:
        ip = bracket.group(1)
        inner = head[:bracket.start()]
        lp = inner.rfind("(")
        if exim:
            # exim: "rdns ([ip] helo=x)" or "[ip] (helo=x)"
            helo = exim.group(1)
            rdns = "" if first.startswith("[") else _name(first)
        elif lp >= 0 and inner[lp + 1:].strip():
            # sendmail/postfix: "helo (rdns [ip])", "helo (IDENT:user@rdns [ip])"
            helo = first
            token = inner[lp + 1:].strip().split()[-1]
            if "@" in token:
                ident, _, token = token.rpartition("@")
                ident = ident.split(":", 1)[-1]
            rdns = "" if token.startswith("[") or _valid_ip(token) else _name(token)
        else:
            # "helo ([ip])", "[helo-ip] ([ip])", "[ip]", "helo [ip]"
            helo = "" if bracket.start() == 0 else first
    elif paren:
        # qmail: "rdns (HELO helo) (ip)", "host (ip)", "unknown (ip)"
        ip = paren.group(1)
        helo = qmail.group(1) if qmail else first
        rdns = "" if _valid_ip(first) else _name(first)
        at = head[paren.start() + 1:paren.end() - 1]
        if "@" in at:
            ident = at.rpartition("@")[0]
    elif _valid_ip(first.strip("[]")):
        # "ip (HELO helo)" — the address first, no rDNS recorded
        ip = first.strip("[]")
        helo = qmail.group(1) if qmail else ""
    else:
        return False if re.search(_IPV4, head) else None
    ip = _clean_ip(ip)
    if not _valid_ip(ip):
        return False
    helo = helo.strip("[]").rstrip(".")
    if helo.startswith("(") or helo.lower() == "helo":
        helo = ""
    return Relay(ip=ip, rdns=rdns, helo=helo, by=by, ident=ident,
                 envfrom=envm.group(1) if envm else "", id=idm.group(1) if idm else "",
                 auth=auth)


def _always_trusted(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    return addr.is_loopback


def private_ip(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return any(addr in ipaddress.ip_network(n) for n in
                   ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    return addr in ipaddress.ip_network("fc00::/7")


def relay_path(received: list[str]) -> RelayPath:
    """Parse Received headers (newest first) and infer the trust boundary."""
    parsed: list[Relay] = []
    unparseable = 0
    for index, value in enumerate(received[:MAX_RECEIVED]):
        relay = parse_received(value)
        if relay is False:
            unparseable += 1
        elif relay is not None:
            parsed.append(Relay(**{**relay.__dict__, "index": index}))
    out = []
    trusting = True
    for relay in parsed:
        # the hosts before this one were all trusted (else `trusting` is already off)
        trusting = trusting and (_always_trusted(relay.ip) or private_ip(relay.ip) or
                                 bool(relay.auth))
        out.append(Relay(**{**relay.__dict__, "trusted": trusting, "internal": trusting}))
    return RelayPath(tuple(out), unparseable)
