"""The configuration schema: one frozen dataclass per TOML table.

Every field carries its documentation in `metadata["doc"]`; `mailyard.toml.example` and the
README's reference are generated from here (`mailyard config example`), so the schema is the
one source of truth. Types are checked by the loader from the annotations; value checks that
need more than a type live in `metadata["check"]` (a callable raising ValueError).

Packages add their own keys to their own table here. Keep each table's fields together and
give each a default that works out of the box.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any, Callable


def setting(default: Any, doc: str, check: Callable[[Any], None] | None = None) -> Any:
    """A config field: default, one-line documentation, optional value check."""
    meta = {"doc": doc, "check": check}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# -- value checks (raise ValueError with a message that says what is wrong) ---------------

def check_hostport(value: str) -> None:
    if value == "":
        return
    from mailyard.config.loader import parse_hostport

    parse_hostport(value)


def check_hostports(values: list[str]) -> None:
    for v in values:
        if v == "":
            raise ValueError("an empty address is not allowed here")
        check_hostport(v)


def check_networks(values: list[str]) -> None:
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not a CIDR network (like 192.0.2.0/24)") from None


def check_positive(value: float) -> None:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")


def check_non_negative(value: float) -> None:
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")


def check_domains(values: list[str]) -> None:
    for v in values:
        if not v or "@" in v or " " in v or v.startswith("."):
            raise ValueError(f"{v!r} is not a domain name")


def check_log_level(value: str) -> None:
    if value.lower() not in ("debug", "info", "warning", "error"):
        raise ValueError("must be one of debug, info, warning, error")


def check_backend(value: str) -> None:
    if value != "builtin":
        if not value:
            raise ValueError("must be builtin or a clamd address (HOST:PORT or unix:/path)")
        check_hostport(value)


def check_on_limits(value: str) -> None:
    if value not in ("block", "pass"):
        raise ValueError("must be block or pass")


# -- the tables -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerSettings:
    hostname: str = setting(socket.getfqdn() or "localhost",
                            "Our name in greetings, Received: headers and bounces.")
    data_dir: str = setting("./var", "Where every piece of state lives (queue, mail, "
                            "databases); relative paths are relative to the config file.")
    domains: list[str] = setting([], "Local domains, in addition to those added with "
                                 "`mailyard domain add`.", check_domains)
    log_level: str = setting("info", "debug, info, warning or error.", check_log_level)
    shutdown_timeout: float = setting(10.0, "Seconds SIGTERM waits for sessions to drain.",
                                      check_positive)


@dataclass(frozen=True)
class ListenSettings:
    smtp: str = setting("0.0.0.0:25", "MX: mail from the world (HOST:PORT; empty = off).",
                        check_hostport)
    submission: str = setting("0.0.0.0:587", "Submission with STARTTLS and AUTH.", check_hostport)
    submissions: str = setting("0.0.0.0:465", "Submission over implicit TLS.", check_hostport)
    reinject: str = setting("127.0.0.1:10025", "Trusted reinjection from the content filter.",
                            check_hostport)
    filter: str = setting("127.0.0.1:10024", "Content filter (SMTP in, scans, reinjects).",
                          check_hostport)
    lmtp: str = setting("127.0.0.1:24", "LMTP delivery agent.", check_hostport)
    imap: str = setting("0.0.0.0:143", "IMAP with STARTTLS.", check_hostport)
    imaps: str = setting("0.0.0.0:993", "IMAP over implicit TLS.", check_hostport)
    pop3: str = setting("0.0.0.0:110", "POP3 with STLS.", check_hostport)
    pop3s: str = setting("0.0.0.0:995", "POP3 over implicit TLS.", check_hostport)
    managesieve: str = setting("0.0.0.0:4190", "ManageSieve (users edit their filters).",
                               check_hostport)
    spamd: str = setting("", "spamd-compatible listener for spamc (off by default).",
                         check_hostport)
    clamd: str = setting("", "clamd-compatible listener for clamdscan (off by default); "
                         "HOST:PORT or unix:/path.", check_hostport)
    metrics: str = setting("", "Prometheus-style metrics over HTTP (off by default).",
                           check_hostport)


@dataclass(frozen=True)
class FilterSettings:
    next_hop: str = setting("", "Where the queue sends received mail for scanning "
                            "(HOST:PORT; empty = our own filter listener).", check_hostport)
    reinject: str = setting("", "Where the filter returns scanned mail "
                            "(HOST:PORT; empty = our own reinject listener).", check_hostport)
    tag_level: float = setting(-999.0, "Add X-Spam-* headers at or above this score "
                               "(-999 = always).")
    spam_level: float = setting(5.0, "X-Spam-Flag: YES (and the subject tag) at or above this "
                                "score; per-user overrides come from accounts.")
    kill_level: float = setting(0.0, "Quarantine instead of delivering at or above this "
                                "score (0 = never: spam is delivered tagged, and the "
                                "shipped Sieve default files it into Junk).",
                                check_non_negative)
    subject_tag: str = setting("***SPAM*** ", "Prefix for the subject of spam "
                               "(empty = leave subjects alone).")
    banned_extensions: list[str] = setting(
        ["exe", "scr", "pif", "com", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh",
         "hta", "cpl", "msi", "jar", "lnk", "reg"],
        "Attachment extensions that send a message to quarantine (also inside archives).")
    bypass_spam: list[str] = setting([], "Recipients (address or @domain) whose mail is not "
                                     "spam-checked.")
    bypass_banned: list[str] = setting([], "Recipients whose mail is not checked for banned "
                                       "attachments.")
    notify_postmaster: bool = setting(True, "Tell the postmaster when a virus is quarantined.")
    notify_recipient: bool = setting(False, "Tell the recipient when a virus is quarantined.")
    postmaster: str = setting("", "Address for notices (empty = postmaster@ the first local "
                              "domain).")
    max_concurrent: int = setting(0, "Messages scanned at once (0 = twice the cores).",
                                  check_non_negative)
    scan_timeout: float = setting(120.0, "Seconds a scan may take before the message is "
                                  "deferred (451).", check_positive)


@dataclass(frozen=True)
class DnsSettings:
    nameservers: list[str] = setting([], "Resolvers as HOST:PORT; empty = the system's.",
                                     check_hostports)
    timeout: float = setting(5.0, "Seconds before a DNS query is given up.", check_positive)


@dataclass(frozen=True)
class TlsSettings:
    cert: str = setting("", "PEM certificate chain; empty = a self-signed pair generated "
                        "under data_dir/tls on first run.")
    key: str = setting("", "PEM private key for `cert`.")


@dataclass(frozen=True)
class SmtpSettings:
    trusted_networks: list[str] = setting(["127.0.0.0/8", "::1/128"],
                                          "Clients that may relay without authentication.",
                                          check_networks)
    max_message_size: int = setting(52428800, "Largest message accepted, in bytes (SIZE).",
                                    check_positive)
    max_recipients: int = setting(100, "Recipients per message (452 4.5.3 beyond).",
                                  check_positive)


@dataclass(frozen=True)
class DnsblSettings:
    zones: list[str] = setting([], "Client IP blocklists queried at RCPT, e.g. "
                               "\"zen.spamhaus.org\".", check_domains)


@dataclass(frozen=True)
class GreylistSettings:
    enabled: bool = setting(True, "Greylist untrusted, unauthenticated senders.")
    min_delay: float = setting(300.0, "Seconds before a retry of a new triplet is accepted.",
                               check_non_negative)
    retry_window: float = setting(172800.0, "Seconds within which the retry must come.",
                                  check_positive)


@dataclass(frozen=True)
class SpamSettings:
    required_score: float = setting(5.0, "Score at which a message is spam.")
    rules_dirs: list[str] = setting([], "Extra directories of SpamAssassin-syntax .cf rules.")
    bayes: bool = setting(True, "Use the Bayesian classifier users teach from Junk.")


@dataclass(frozen=True)
class AntivirusSettings:
    databases: str = setting("", "A ClamAV-style signature database directory "
                             "(empty = built-in signatures only).")
    backend: str = setting("builtin", "`builtin`, or a clamd socket (HOST:PORT or "
                           "unix:/path) to delegate scanning to.", check_backend)
    max_depth: int = setting(16, "Deepest nesting of archives and attached messages "
                             "opened (MaxRecursion).", check_positive)
    max_total_bytes: int = setting(209715200, "Bytes unpacked and decoded per scan, in all "
                                   "(MaxScanSize).", check_positive)
    max_file_size: int = setting(104857600, "Largest single unpacked file (MaxFileSize).",
                                 check_positive)
    max_files: int = setting(10000, "Members taken from one archive (MaxFiles).",
                             check_positive)
    max_ratio: float = setting(250.0, "Largest unpacked/packed size ratio of an archive "
                               "member above 1 MiB (zip bombs).", check_positive)
    max_scan_time: float = setting(120.0, "Seconds one scan may take (MaxScanTime).",
                                   check_positive)
    on_limits: str = setting("block", "`block`: a scan cut short by a limit counts as "
                             "infected (Heuristics.Limits.Exceeded.*); `pass`: clean.",
                             check_on_limits)
    stream_max_length: int = setting(104857600, "clamd listener: largest INSTREAM upload, "
                                     "in bytes (StreamMaxLength).", check_positive)


@dataclass(frozen=True)
class SieveSettings:
    before: str = setting("", "Global Sieve script run before the user's (path).")
    after: str = setting("", "Global Sieve script run after the user's (path).")


@dataclass(frozen=True)
class SenderAuthSettings:
    check: bool = setting(True, "Check SPF at MAIL FROM and DKIM/DMARC after DATA on the MX, "
                          "and add Authentication-Results.")
    dkim_sign: bool = setting(True, "DKIM-sign mail from local domains that have a key "
                              "(`mailyard dkim generate DOMAIN`).")


@dataclass(frozen=True)
class DmarcSettings:
    enforce: bool = setting(False, "Refuse (550 5.7.1 at end of DATA) mail whose DMARC policy "
                            "is p=reject and that fails DMARC.")


@dataclass(frozen=True)
class Settings:
    """All of mailyard's settings, one attribute per TOML table."""

    server: ServerSettings = field(default_factory=ServerSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
    filter: FilterSettings = field(default_factory=FilterSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    dnsbl: DnsblSettings = field(default_factory=DnsblSettings)
    greylist: GreylistSettings = field(default_factory=GreylistSettings)
    spam: SpamSettings = field(default_factory=SpamSettings)
    antivirus: AntivirusSettings = field(default_factory=AntivirusSettings)
    sieve: SieveSettings = field(default_factory=SieveSettings)
    senderauth: SenderAuthSettings = field(default_factory=SenderAuthSettings)
    dmarc: DmarcSettings = field(default_factory=DmarcSettings)
    # Where the settings came from (None = built-in defaults); not a TOML key.
    source: str | None = field(default=None, compare=False)

    @property
    def data_path(self):
        from pathlib import Path

        return Path(self.server.data_dir)

    def filter_next_hop(self) -> str:
        return self.filter.next_hop or self.listen.filter

    def filter_reinject(self) -> str:
        return self.filter.reinject or self.listen.reinject
