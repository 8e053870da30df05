"""SMTP client side of the queue: remote MX delivery, over aiosmtplib (the filter hop has
its own pipelined client, `filter_client`, which shares the `ConnectionCache`).

One `smtp_transaction` sends one message to one server and returns a `Reply` per
recipient; it never raises for anything the network or the peer does — a refused
connection, a timeout, a garbage greeting all become a 4xx reply for every recipient, so the
scheduler has one path: 2xx done, 4xx retry, 5xx bounce.

`deliver_remote` resolves a domain's MX hosts (RFC 5321 §5.1: preference order, equal
preferences shuffled, the domain itself as implicit MX when there is none; RFC 7505 null MX
bounces at once) and tries them in turn until one of them takes responsibility or refuses.
TLS is opportunistic (RFC 7435) unless `[queue] tls_verify` asks for a certificate valid
for the MX name. A `ConnectionCache` keeps the connection open after a message, so the
next message to the same domain goes over it after an RSET.
"""

from __future__ import annotations

import random
import re
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from mailyard.dns import DnsError, DnsTemporaryError
from mailyard.envelope import Envelope
from mailyard.queue.records import RecipientState, Reply
from mailyard.smtp import xtext_encode

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*")

# Replies we make up ourselves (RFC 3463 codes).
CONNECT_FAILED = "4.4.1"       # no answer from host
DNS_TEMPORARY = "4.4.3"        # directory server failure
NULL_MX = "5.1.10"             # RFC 7505 §4.1: recipient address has null MX
NO_ROUTE = "5.4.4"             # unable to route
MAIL_LOOP = "5.4.6"            # routing loop detected


def make_reply(code: int, message: str, remote: str) -> Reply:
    text = " ".join(message.split())
    match = _ENHANCED.match(text)
    enhanced = ""
    if match and match.group(1)[0] == str(code)[0]:
        enhanced = match.group(1)
        text = text[match.end():]
    return Reply(code=code, text=text, enhanced=enhanced, remote=remote)


@dataclass(frozen=True)
class Target:
    """Where to connect: an address, a port, and the name to show (and verify TLS for)."""

    host: str
    port: int
    name: str


def _mail_options(envelope: Envelope, smtp: aiosmtplib.SMTP, message: bytes) -> list[str]:
    options = []
    if smtp.supports_extension("8bitmime") and (envelope.body.upper() == "8BITMIME"
                                                or not message[:65536].isascii()):
        options.append("BODY=8BITMIME")
    if envelope.smtputf8 and smtp.supports_extension("smtputf8"):
        options.append("SMTPUTF8")
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(message)}")
    if smtp.supports_extension("dsn"):
        options += [f"{k}={v}" for k, v in dsn_mail_params(envelope).items()]
    return options


def dsn_mail_params(envelope: Envelope) -> dict[str, str]:
    """RFC 3461 §4.3, §4.4: RET and ENVID passed on to a DSN-capable next hop (xtext)."""
    params = {}
    if envelope.dsn_ret:
        params["RET"] = envelope.dsn_ret
    if envelope.dsn_envid:
        params["ENVID"] = xtext_encode(envelope.dsn_envid)
    return params


def dsn_rcpt_params(rcpt: RecipientState) -> dict[str, str]:
    """RFC 3461 §4.1, §4.2: NOTIFY and ORCPT passed on (the envelope keeps ORCPT decoded)."""
    params = {}
    if rcpt.notify:
        params["NOTIFY"] = ",".join(rcpt.notify)
    if rcpt.orcpt:
        addr_type, _, addr = rcpt.orcpt.partition(";")
        params["ORCPT"] = f"{addr_type.strip() or 'rfc822'};{xtext_encode(addr.strip())}"
    return params


def _rcpt_options(rcpt: RecipientState, smtp: aiosmtplib.SMTP) -> list[str]:
    if not smtp.supports_extension("dsn"):
        return []
    return [f"{k}={v}" for k, v in dsn_rcpt_params(rcpt).items()]


class ConnectionCache:
    """Idle outbound connections kept for the next message to the same domain.

    Several messages to one destination then share a connection (RSET between them) instead
    of paying for TCP, EHLO and TLS each time. An idle connection lives `idle_timeout`
    seconds and carries at most `max_messages` messages.
    """

    def __init__(self, idle_timeout: float = 10.0, max_messages: int = 100):
        self.idle_timeout = idle_timeout
        self.max_messages = max_messages
        self._idle: dict[str, list[tuple[aiosmtplib.SMTP, Target, int, float]]] = {}
        self.reused = 0             # statistics, for tests

    def take(self, domain: str) -> tuple[aiosmtplib.SMTP, Target, int] | None:
        now = time.monotonic()
        idle = self._idle.get(domain, [])
        while idle:
            smtp, target, uses, since = idle.pop()
            if now - since < self.idle_timeout and smtp.is_connected:
                return smtp, target, uses
            smtp.close()
        return None

    def give(self, domain: str, smtp: aiosmtplib.SMTP, target: Target, uses: int) -> None:
        if uses >= self.max_messages or not smtp.is_connected:
            smtp.close()
            return
        self._idle.setdefault(domain, []).append((smtp, target, uses, time.monotonic()))

    def sweep(self) -> None:
        now = time.monotonic()
        for domain, idle in list(self._idle.items()):
            keep = []
            for item in idle:
                if now - item[3] < self.idle_timeout and item[0].is_connected:
                    keep.append(item)
                else:
                    item[0].close()
            if keep:
                self._idle[domain] = keep
            else:
                del self._idle[domain]

    def close_all(self) -> None:
        for idle in self._idle.values():
            for item in idle:
                item[0].close()
        self._idle.clear()


async def smtp_transaction(target: Target, envelope: Envelope, recipients: list[RecipientState],
                           message: bytes, *, helo: str, connect_timeout: float,
                           command_timeout: float, opportunistic_tls: bool = True,
                           tls_context: ssl.SSLContext | None = None,
                           connection: aiosmtplib.SMTP | None = None, keep: bool = False
                           ) -> tuple[dict[str, Reply], bool, bool, aiosmtplib.SMTP | None]:
    """Send `message` to `recipients` through `target`.

    Returns (replies by recipient address, whether the server took part at all — False for
    a connection that failed before MAIL accepted, which lets the caller try the next MX —,
    whether the server advertised DSN, and — with `keep` — the connection, still open and
    ready for another message, or None).

    `connection` is an idle connection from a `ConnectionCache` to reuse: it is checked
    with RSET first; if that fails the result says "not reached" and the caller connects
    afresh.
    """
    remote = target.name
    if connection is not None:
        smtp = connection
    else:
        smtp = aiosmtplib.SMTP(hostname=target.host, port=target.port, local_hostname=helo,
                               timeout=command_timeout, start_tls=False, use_tls=False,
                               validate_certs=False)
    replies: dict[str, Reply] = {}
    reached = False
    dsn = False
    live: aiosmtplib.SMTP | None = None
    try:
        if connection is not None:
            response = await smtp.execute_command(b"RSET")
            if response.code != 250:
                raise aiosmtplib.SMTPServerDisconnected("idle connection refused RSET")
        else:
            await smtp.connect(timeout=connect_timeout)
            await smtp.ehlo()
            if tls_context is not None and not smtp.supports_extension("starttls"):
                # Verified TLS is required: a server without STARTTLS is not good enough.
                raise aiosmtplib.SMTPException(f"{target.name} does not offer STARTTLS")
            if opportunistic_tls and smtp.supports_extension("starttls"):
                # RFC 3207 / RFC 7435: encrypt when offered; certificates are not verified
                # for opportunistic TLS (an MX has no way to tell us which name to expect).
                context = tls_context or ssl.create_default_context()
                if tls_context is None:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                await smtp.starttls(server_hostname=target.name, tls_context=context)
                await smtp.ehlo()
        dsn = smtp.supports_extension("dsn")
        encoding = "utf-8" if envelope.smtputf8 else "ascii"
        response = await smtp.execute_command(
            b"MAIL", f"FROM:<{envelope.sender}>".encode(encoding),
            *[o.encode("ascii") for o in _mail_options(envelope, smtp, message)])
        if response.code != 250:
            reply = make_reply(response.code, response.message, remote)
            # A 4xx to MAIL: this host is unwilling now, the next MX may take it.
            return {r.address: reply for r in recipients}, reply.permanent, dsn, None
        reached = True
        accepted = []
        for rcpt in recipients:
            response = await smtp.execute_command(
                b"RCPT", f"TO:<{rcpt.address}>".encode(encoding),
                *[o.encode("ascii") for o in _rcpt_options(rcpt, smtp)])
            if response.code in (250, 251):
                accepted.append(rcpt.address)
            else:
                replies[rcpt.address] = make_reply(response.code, response.message, remote)
        if not accepted:
            await smtp.execute_command(b"RSET")
        else:
            try:
                response = await smtp.data(message)
                reply = make_reply(response.code, response.message, remote)
            except aiosmtplib.SMTPDataError as exc:
                reply = make_reply(exc.code, exc.message, remote)
            for address in accepted:
                replies[address] = reply
        if keep and smtp.is_connected:
            live = smtp
        else:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                pass
        return replies, True, dsn, live
    except (TimeoutError, aiosmtplib.SMTPException, OSError, ssl.SSLError, UnicodeError,
            ValueError) as exc:
        code = getattr(exc, "code", None)
        if isinstance(code, int) and 400 <= code < 600 and not isinstance(
                exc, aiosmtplib.SMTPServerDisconnected):
            reply = make_reply(code, getattr(exc, "message", str(exc)), remote)
        else:
            reply = Reply(code=451, enhanced=CONNECT_FAILED, remote=remote,
                          text=f"{type(exc).__name__}: {exc}"[:300])
        for rcpt in recipients:
            replies.setdefault(rcpt.address, reply)
        # Once MAIL was accepted the server took part: the attempt is deferred as a whole
        # rather than repeated at the next MX, which might make a duplicate.
        return replies, reached, dsn, None
    finally:
        if live is None:
            smtp.close()


async def mx_targets(resolver, domain: str, port: int,
                     myself: str = "") -> list[Target] | Reply:
    """The hosts to try for `domain`, in order; or a Reply saying why there are none.

    RFC 5321 §5.1: when we are one of the MX hosts (`myself`), only hosts with a lower
    preference are tried; none left means the mail would loop back to us.
    """
    try:
        mx = await resolver.mx(domain)
    except DnsTemporaryError as exc:
        return Reply(code=451, enhanced=DNS_TEMPORARY, text=f"MX lookup for {domain}: {exc}")
    except DnsError as exc:
        return Reply(code=550, enhanced=NO_ROUTE, text=f"MX lookup for {domain}: {exc}")
    if any(host in (".", "") for _, host in mx):
        # RFC 7505 §3: a null MX says the domain accepts no mail; §4.1 says bounce now.
        return Reply(code=556, enhanced=NULL_MX, text=f"Domain {domain} does not accept mail "
                     "(null MX)")
    if not mx:
        hosts = [domain]           # RFC 5321 §5.1: the implicit MX
    else:
        mine = [pref for pref, host in mx if myself and host.lower() == myself.lower()]
        if mine:
            mx = [(pref, host) for pref, host in mx if pref < min(mine)]
            if not mx:
                return Reply(code=554, enhanced=MAIL_LOOP, text=f"mail for {domain} loops "
                             "back to myself (we are its best MX)")
        by_pref: dict[int, list[str]] = {}
        for pref, host in mx:
            by_pref.setdefault(pref, []).append(host)
        hosts = []
        for pref in sorted(by_pref):
            group = by_pref[pref]
            random.shuffle(group)   # RFC 5321 §5.1: spread load over equal preferences
            hosts.extend(group)
    targets: list[Target] = []
    temporary = False
    for host in hosts:
        try:
            addresses = await resolver.a(host)
            try:
                addresses += await resolver.aaaa(host)
            except DnsError:
                pass
        except DnsTemporaryError:
            temporary = True
            continue
        except DnsError:
            continue
        targets.extend(Target(host=ip, port=port, name=host) for ip in addresses)
    if not targets:
        if temporary:
            return Reply(code=451, enhanced=DNS_TEMPORARY, text=f"address lookup for the "
                         f"mail servers of {domain} failed")
        return Reply(code=550, enhanced=NO_ROUTE, text=f"no mail server address found for "
                     f"{domain}")
    return targets


async def deliver_remote(resolver, domain: str, envelope: Envelope,
                         recipients: list[RecipientState], message: bytes, *, port: int,
                         helo: str, connect_timeout: float, command_timeout: float,
                         cache: ConnectionCache | None = None,
                         tls_context: ssl.SSLContext | None = None
                         ) -> tuple[dict[str, Reply], bool]:
    """Deliver to `domain`'s MX hosts; (reply per recipient, whether the MX speaks DSN).

    With `tls_context` (verifying), STARTTLS is required and the certificate must be valid
    for the MX host name (the connection itself goes to the resolved address).
    """
    options = {"helo": helo, "connect_timeout": connect_timeout,
               "command_timeout": command_timeout, "keep": cache is not None,
               "tls_context": tls_context}
    if cache is not None:
        idle = cache.take(domain)
        if idle is not None:
            smtp, target, uses = idle
            replies, reached, dsn, live = await smtp_transaction(
                target, envelope, recipients, message, connection=smtp, **options)
            if live is not None:
                cache.give(domain, live, target, uses + 1)
            if reached:
                cache.reused += 1
                return replies, dsn
    targets = await mx_targets(resolver, domain, port, myself=helo)
    if isinstance(targets, Reply):
        return {r.address: targets for r in recipients}, False
    replies: dict[str, Reply] = {}
    for target in targets:
        replies, reached, dsn, live = await smtp_transaction(
            target, envelope, recipients, message, **options)
        if live is not None and cache is not None:
            cache.give(domain, live, target, 1)
        if reached:
            return replies, dsn
    return replies, False
