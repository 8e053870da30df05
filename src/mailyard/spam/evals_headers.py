"""Header and relay `eval:` functions (SpamAssassin's HeaderEval/RelayEval/VBounce families).

Written from SpamAssassin's documented rule descriptions, not its code; each reads the
parsed message (`ctx.msg`) and the relay path (`ctx.relays`, mailyard.spam.relays).

- Relays: check_relays_unparseable, helo_ip_mismatch, check_for_no_rdns_dotcom_helo,
  check_for_forged_yahoo_received_headers, check_for_no_hotmail_received_headers,
  check_for_forged_hotmail_received_headers, check_for_forged_gmail_received_headers,
  gated_through_received_hdr_remover.
- Addresses: check_equal_from_domains (From vs envelope sender registered domain),
  check_mailfrom_matches_rcvd (envelope sender domain = the handover relay's rDNS domain),
  similar_recipients(min, max), sorted_recipients.
- Message-ID: check_outlook_message_id (the send time an Outlook Express Message-ID encodes
  against Date: and the oldest Received: date).
- VBounce: have_any_bounce_relays, check_welcomelist_bounce_relays (and the old name).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re

from mailyard.spam.evals import _addrs, _eval, _num, received_time
from mailyard.spam.relays import private_ip

# -- relays ---------------------------------------------------------------------------------


@_eval()
def check_relays_unparseable(ctx):
    """Received headers naming a sending host whose address we could not read."""
    return ctx.relays.unparseable


def _public_v4(text: str) -> ipaddress.IPv4Address | None:
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    return addr if addr.is_global else None


@_eval()
def helo_ip_mismatch(ctx):
    """An untrusted relay HELO'd with a public IP address in another /24 than its own."""
    for relay in ctx.relays.untrusted:
        helo = _public_v4(relay.helo)
        ip = _public_v4(relay.ip)
        if helo is not None and ip is not None and \
                ipaddress.ip_network(f"{helo}/24", strict=False) != \
                ipaddress.ip_network(f"{ip}/24", strict=False):
            return True
    return False


_DOTCOM_HELO = re.compile(r"(?i)(?:\.|^)(?:lycos\.com|lycos\.co\.uk|hotmail\.com|localhost\.com"
                          r"|excite\.com|caramail\.com|cs\.com|aol\.com|msn\.com|yahoo\.com"
                          r"|drizzle\.com)$")


@_eval()
def check_for_no_rdns_dotcom_helo(ctx):
    """RelayEval's check: an untrusted relay with no rDNS HELO'd as one of the big dotcoms
    (its list). As RelayEval computes it, each public untrusted relay in turn sets the
    answer, so the oldest one decides."""
    answer = False
    for relay in ctx.relays.untrusted:
        if private_ip(relay.ip):
            continue
        answer = bool(_DOTCOM_HELO.search(relay.helo)) and not relay.rdns
    return answer


def _from_domain(ctx) -> str:
    addrs = _addrs(ctx, "From")
    return addrs[0].rpartition("@")[2] if addrs else ""


def _received_mentions(ctx, pattern: str) -> bool:
    rx = re.compile(pattern, re.IGNORECASE)
    return any(rx.search(v) for v in ctx.msg.header("Received"))


_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_YAHOO_SENT = [re.compile(p) for p in (
    r"by web\S+\.mail\S*\.yahoo\.com via HTTP",
    r"by sonic\S+\.consmr\.mail\S*\.yahoo\.com with HTTP",
    r"by smtp\S+\.yahoo\.com with SMTP",
    rf"from \[{_IPV4}\] by \S+\.(?:groups|scd|dcn)\.yahoo\.com with NNFMP",
    r"by \w+\.\w+\.yahoo\.com \(\d+\.\d+\.\d+/\d+\.\d+\.\d+\)(?: with ESMTP)? id \w+")]


@_eval()
def check_for_forged_yahoo_received_headers(ctx):
    """HeaderEval's check: From: a yahoo.com address, and none of the Received shapes Yahoo's
    own web mail, SMTP submission, groups or bounces leave (nor a yahoo.com rDNS at the trust
    boundary). Mentioning yahoo.com somewhere in a Received is not enough — spam forges
    that too."""
    frm = _addrs(ctx, "From")
    if not frm or not re.search(r"\byahoo\.com$", frm[0]):
        return False
    msg = ctx.msg
    rcvd = "\n".join(msg.header("Received"))
    if msg.header("Resent-From") and msg.header("Resent-To") and msg.header("X-Received"):
        rcvd = "\n".join(msg.header("X-Received"))
    rcvd = re.sub(r"\s+", " ", rcvd)
    if gated_through_received_hdr_remover(ctx):
        return False
    path = ctx.relays
    if re.search(r" rdns=\S+\.yahoo\.com ", path.pseudo_header("Trusted")) or \
            re.search(r"^[^\]]+ rdns=\S+\.yahoo\.com ", path.pseudo_header("Untrusted")):
        return False
    if any(p.search(rcvd) for p in _YAHOO_SENT):
        return False
    return not (re.search(r"\bmailer\d+\.bulk\.scd\.yahoo\.com\b", rcvd) and
                re.search(r"@reply\.yahoo\.com$", frm[0]))


@_eval()
def check_for_no_hotmail_received_headers(ctx):
    """From: a hotmail.com address, but no Received: header from Hotmail's hosts."""
    if not re.search(r"(?:^|\.)hotmail\.com$", _from_domain(ctx)):
        return False
    return not _received_mentions(ctx, r"hotmail\.com\b|msn\.com\b|outlook\.com\b|"
                                       r"hotmail\.msn\.com\b")


@_eval()
def check_for_forged_hotmail_received_headers(ctx):
    """Received headers claim a Hotmail host, but the relay path does not come from one."""
    if not _received_mentions(ctx, r"\bby\s+\S*hotmail\.com\b"):
        return False
    return not any(r.rdns.lower().endswith(("hotmail.com", "msn.com", "outlook.com"))
                   for r in ctx.relays.relays)


@_eval()
def check_for_forged_gmail_received_headers(ctx):
    """From: a gmail.com address with no Received: header from Google's hosts."""
    if _from_domain(ctx) not in ("gmail.com", "googlemail.com"):
        return False
    if not ctx.msg.header("Received"):
        return False
    return not _received_mentions(ctx, r"google\.com\b|gmail\.com\b|googlemail\.com\b")


@_eval()
def gated_through_received_hdr_remover(ctx):
    """HeaderEval's check: the message came through something that strips Received headers —
    an ezmlm list (its Mailing-List, Delivered-To and qmail Received), MSN groups — or it has
    no Received header at all, so the forged-Received checks cannot judge it."""
    msg = ctx.msg
    received = msg.header("Received")
    mailing = "\n".join(msg.header("Mailing-List"))
    if re.search(r"(?m)^contact \S+@\S+; run by ezmlm$", mailing) and \
            re.search(r"(?m)^mailing list \S+@\S+", "\n".join(msg.header("Delivered-To"))) and \
            re.search(r"qmail \d+ invoked (?:from network|by .{3,20})\); \d+ ... \d+",
                      "\n".join(received)):
        return True
    if not received:
        return True
    return re.search(r"from groups\.msn\.com \(\S+\.msn\.com ", "\n".join(received)) is not None


# -- addresses ------------------------------------------------------------------------------
_TWO_LEVEL = re.compile(r"^(?:co|com|net|org|gov|edu|ac|ne|or|go|mil)\.[a-z]{2}$")


def registered_domain(domain: str) -> str:
    """example.co.uk from mail.example.co.uk (the usual two-level ccTLD forms), else the last
    two labels."""
    labels = domain.lower().strip(".").split(".")
    if len(labels) >= 3 and _TWO_LEVEL.match(".".join(labels[-2:])):
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


@_eval()
def check_equal_from_domains(ctx):
    """From: and the envelope sender are in different registered domains."""
    env = [a for a in _addrs(ctx, "EnvelopeFrom") if "@" in a]
    frm = [a for a in _addrs(ctx, "From") if "@" in a]
    if not env or not frm:
        return False
    return registered_domain(env[0].rpartition("@")[2]) != \
        registered_domain(frm[0].rpartition("@")[2])


@_eval()
def check_mailfrom_matches_rcvd(ctx):
    """The envelope sender's domain is the (registered) domain of the first untrusted relay's
    reverse DNS name, or of any trusted relay's when all are trusted."""
    env = [a for a in _addrs(ctx, "EnvelopeFrom") if "@" in a]
    if not env:
        return False
    domain = registered_domain(env[0].rpartition("@")[2])
    path = ctx.relays
    relays = path.untrusted[:1] or path.trusted
    return any(r.rdns and registered_domain(r.rdns) == domain for r in relays)


def _recipients(ctx) -> list[str]:
    seen: list[str] = []
    for addr in _addrs(ctx, "To") + _addrs(ctx, "Cc"):
        if "@" in addr and addr not in seen:
            seen.append(addr)
    return seen


@_eval()
def similar_recipients(ctx, low, high="undef"):
    """The share of neighbouring (sorted) recipients that look alike — same domain and the
    same first three characters — is within [low, high); needs 5 or more recipients."""
    addrs = sorted(_recipients(ctx))
    if len(addrs) < 5:
        return False
    similar = 0
    for a, b in zip(addrs, addrs[1:]):
        la, _, da = a.partition("@")
        lb, _, db = b.partition("@")
        if da == db and la[:3] == lb[:3]:
            similar += 1
    ratio = similar / (len(addrs) - 1)
    hi = 1e9 if str(high) == "undef" else _num(high)
    return _num(low) <= ratio < hi + (1e-9 if hi >= 1 else 0)


@_eval()
def sorted_recipients(ctx):
    """Seven or more To/Cc recipients listed in alphabetical order."""
    addrs = _recipients(ctx)
    return len(addrs) >= 7 and addrs == sorted(addrs)


# -- Message-ID -----------------------------------------------------------------------------
_OE_MSGID = re.compile(r"<[0-9a-f]{4}([0-9a-f]{8})\$[0-9a-f]{8}\$[0-9a-f]{8}@", re.IGNORECASE)
# an Outlook Express Message-ID starts with the send time as a Windows FILETIME (100 ns
# ticks since 1601); hex digits 5-12 are its high 32 bits, i.e. units of 2**32 / 10**7 s
_FILETIME_EPOCH = 11644473600
_TICK = 2 ** 32 / 10 ** 7
_FUDGE = 15


def _oe_unit(timestamp: float) -> float:
    return (timestamp + _FILETIME_EPOCH) / _TICK


@_eval()
def check_outlook_message_id(ctx):
    """An Outlook Express style Message-ID whose encoded time matches neither Date: nor the
    oldest Received: date (spamware copies the format, not the clock)."""
    ids = ctx.msg.header("Message-ID")
    m = _OE_MSGID.search(ids[0]) if ids else None
    if m is None:
        return False
    token = int(m.group(1), 16)
    times = []
    dates = ctx.msg.header("Date")
    if dates:
        try:
            parsed = email.utils.parsedate_to_datetime(dates[0])
            times.append(parsed.timestamp())
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    received = ctx.msg.header("Received")
    if received:
        got = received_time(received[-1])
        if got is not None:
            times.append(got.timestamp())
    if not times:
        return False
    return all(abs(token - _oe_unit(t)) >= _FUDGE for t in times)


# -- VBounce --------------------------------------------------------------------------------
@_eval()
def have_any_bounce_relays(ctx):
    """`welcomelist_bounce_relays` names at least one host (else bounce rules stay off)."""
    return bool(ctx.ruleset.bounce_relays)


@_eval("check_welcomelist_bounce_relays", "check_whitelist_bounce_relays")
def check_welcomelist_bounce_relays(ctx):
    """The bounced message quoted in the body passed through one of our own relays."""
    relays = ctx.ruleset.bounce_relays
    if not relays:
        return False
    quoted = [v for p in ctx.msg.parts for n, v in p.headers if n.lower() == "received"]
    quoted += re.findall(r"(?im)^Received:[^\n]*(?:\n[ \t][^\n]*)*",
                         ctx.msg.rawbody_text[:200_000])
    for value in quoted:
        for m in re.finditer(r"\bby\s+([^\s;()]+)", value):
            if m.group(1).lower().rstrip(".") in relays:
                return True
    return False
