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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


def check_processes(value: int) -> None:
    if not 0 <= value <= 64:
        raise ValueError(f"must be 0 (auto) or a number of processes from 1 to 64, got {value}")


def check_domains(values: list[str]) -> None:
    for v in values:
        if not v or "@" in v or " " in v or v.startswith("."):
            raise ValueError(f"{v!r} is not a domain name")


def check_bare_newlines(value: str) -> None:
    if value not in ("reject", "normalize"):
        raise ValueError("must be `reject` or `normalize`")


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
    command_timeout: float = setting(300.0, "Seconds to wait for a client command "
                                     "(RFC 5321 §4.5.3.2.7) before 421 4.4.2.", check_positive)
    data_timeout: float = setting(600.0, "Seconds to wait for the next piece of DATA "
                                  "(RFC 5321 §4.5.3.2.6) before 421 4.4.2.", check_positive)
    max_connections_per_ip: int = setting(50, "Concurrent connections from one client IP "
                                          "per listener (421 4.7.0 beyond).", check_positive)
    max_errors: int = setting(20, "Errors (bad commands, failed AUTH, refused recipients) in "
                              "one session before 421 4.7.0 and disconnect.", check_positive)
    max_line_length: int = setting(4096, "Longest command line in bytes (500 5.5.6 beyond; "
                                   "RFC 5321 asks for at least 512).", check_positive)
    bare_newlines: str = setting("reject", "Bare CR or LF in DATA or commands: `reject` "
                                 "(554 5.6.0 / 500 5.5.2) or `normalize` (turned into CRLF; "
                                 "never ends DATA either way).", check_bare_newlines)
    auth_requires_tls: bool = setting(True, "Offer and accept AUTH only over TLS.")
    smtputf8: bool = setting(True, "Offer SMTPUTF8 (RFC 6531).")
    processes: int = setting(0, "Processes running SMTP sessions (smtp, submission, "
                             "submissions, reinject): 1 = the main process only; N = the main "
                             "process and N-1 workers it hands connections to, all committing "
                             "into the one queue; 0 = auto (one worker per CPU, at most 4; "
                             "none on a single CPU).", check_processes)


def check_dnsbl_zones(values: list[str]) -> None:
    for v in values:
        zone, _, codes = v.partition("=")
        check_domains([zone])
        for code in filter(None, codes.split(",")):
            try:
                ipaddress.ip_network(code, strict=False)
            except ValueError:
                raise ValueError(f"{v!r}: {code!r} is not an address or CIDR "
                                 "(write ZONE=127.0.0.2,127.0.0.4/30)") from None


@dataclass(frozen=True)
class DnsblSettings:
    zones: list[str] = setting([], "Client IP blocklists queried at RCPT, e.g. "
                               "\"zen.spamhaus.org\"; `ZONE=127.0.0.2,127.0.0.10/31` lists "
                               "only on those answers (default: any 127.0.0.0/8 answer except "
                               "127.255.255.0/24, which are resolver errors).",
                               check_dnsbl_zones)
    allowlist: list[str] = setting([], "Client networks never checked against blocklists.",
                                   check_networks)
    timeout: float = setting(5.0, "Seconds to wait for all zones; a zone that does not "
                             "answer in time is skipped (fail open).", check_positive)


@dataclass(frozen=True)
class GreylistSettings:
    enabled: bool = setting(True, "Greylist untrusted, unauthenticated senders.")
    min_delay: float = setting(300.0, "Seconds before a retry of a new triplet is accepted.",
                               check_non_negative)
    retry_window: float = setting(172800.0, "Seconds within which the retry must come.",
                                  check_positive)
    auto_allowlist: int = setting(5, "A client network that passed this many times is not "
                                  "greylisted any more (0 = never).", check_non_negative)
    max_age: float = setting(3024000.0, "Seconds a passed triplet is remembered since last "
                             "seen (default 35 days).", check_positive)


@dataclass(frozen=True)
class SpamSettings:
    required_score: float = setting(5.0, "Score at which a message is spam.")
    rules_dirs: list[str] = setting([], "Extra directories of SpamAssassin-syntax .cf rules.")
    bayes: bool = setting(True, "Use the Bayesian classifier users teach from Junk.")
    per_user_bayes: bool = setting(False, "One Bayes database per user (data_dir/bayes/) "
                                   "instead of one site-wide (data_dir/bayes.sqlite3).")
    auto_learn: bool = setting(True, "Learn clear spam (score >= 12 without Bayes) and clear "
                               "ham (<= 0.1) automatically while scanning.")
    bayes_min_learned: int = setting(200, "Spam and ham messages each that must be learned "
                                     "before Bayes gives a probability.", check_non_negative)
    network_tests: bool = setting(True, "DNSBL/URIBL rules: the filter resolves what they ask "
                                  "through [dns] (skipped for a minute after DNS fails).")
    dns_budget: float = setting(2.0, "Seconds one message may spend on network tests.",
                                check_positive)


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
class DeliverySettings:
    quota_tempfail: bool = setting(False, "Answer a full mailbox with 452 4.2.2 (retry later) "
                                   "instead of 552 5.2.2.")
    spam_to_junk: bool = setting(True, "When `[sieve] before` is empty: file mail marked "
                                 "`X-Spam-Flag: YES` into Junk, before any user script runs.")
    max_connections: int = setting(64, "Concurrent LMTP sessions.", check_positive)


@dataclass(frozen=True)
class SieveSettings:
    before: str = setting("", "Global Sieve script run before the user's (path).")
    after: str = setting("", "Global Sieve script run after the user's (path).")
    global_dir: str = setting("", "Where `include :global` finds NAME.sieve "
                              "(empty = data_dir/sieve/global).")
    max_scripts: int = setting(20, "Scripts one user may store over ManageSieve.",
                               check_positive)
    max_script_size: int = setting(65536, "Largest script one user may store, in bytes.",
                                   check_positive)
    max_actions: int = setting(64, "Actions one Sieve run may take before it is stopped "
                               "(and the message kept).", check_positive)
    max_redirects: int = setting(4, "Redirects one Sieve run may make.", check_positive)


@dataclass(frozen=True)
class QueueSettings:
    retry_initial: float = setting(60.0, "Seconds before the first retry of a deferred "
                                   "message; doubles on each further failure.", check_positive)
    retry_max: float = setting(3600.0, "Longest wait between two retries, in seconds.",
                               check_positive)
    max_lifetime: float = setting(432000.0, "Seconds a message may stay deferred before it "
                                  "is bounced (default 5 days).", check_positive)
    delay_warning: float = setting(14400.0, "Seconds after which the sender is told that a "
                                   "message is delayed (0 = never).", check_non_negative)
    group_commit: bool = setting(True, "Share one fsync among concurrently committed "
                                 "messages (the 250 still waits for it).")
    max_concurrent: int = setting(20, "Deliveries attempted at the same time.", check_positive)
    max_per_destination: int = setting(5, "Connections open at the same time to one "
                                       "remote domain.", check_positive)
    dsn_per_hour: int = setting(100, "Delivery status notifications (bounces, delay "
                                "warnings) sent to one sender per hour at most.",
                                check_positive)
    lmtp_next_hop: str = setting("", "Where final delivery sends mail for local domains over "
                                 "LMTP (HOST:PORT or unix:/path; empty = our own lmtp "
                                 "listener), e.g. a Dovecot LMTP socket.", check_hostport)
    outbound_port: int = setting(25, "TCP port of remote MX hosts (change only for tests).",
                                 check_positive)
    tls_verify: bool = setting(False, "Require STARTTLS with a certificate valid for the MX "
                               "host name when delivering to remote MX hosts; a failure "
                               "defers the message (off: opportunistic TLS, RFC 7435).")
    tls_ca_file: str = setting("", "CA bundle (PEM) for `tls_verify`; empty = the system's.")
    connect_timeout: float = setting(30.0, "Seconds to connect to a next hop.", check_positive)
    command_timeout: float = setting(300.0, "Seconds to wait for a next hop's reply.",
                                     check_positive)
    control_poll: float = setting(1.0, "Seconds between checks for `mailyard queue` "
                                  "requests (flush, hold, delete) in data_dir/queue/control.",
                                  check_positive)


@dataclass(frozen=True)
class ImapSettings:
    idle_timeout: float = setting(1800.0, "Seconds of client silence before the session is "
                                  "closed (RFC 3501 §5.4: at least 30 minutes).",
                                  check_positive)
    max_command_size: int = setting(65536, "Longest command line, literals excluded (bytes).",
                                    check_positive)
    max_literal_size: int = setting(52428800, "Largest literal (APPEND message) accepted; "
                                    "bigger ones are refused before any byte is read.",
                                    check_positive)
    max_bad_commands: int = setting(20, "Consecutive bad commands before the session is "
                                    "closed with BYE.", check_positive)
    plaintext_auth_networks: list[str] = setting(
        ["127.0.0.0/8", "::1/128"], "Clients that may log in without TLS; elsewhere "
        "LOGINDISABLED until STARTTLS.", check_networks)
    auth_failures_free: int = setting(3, "Failed logins per client IP before each further "
                                      "failure is answered more slowly.", check_non_negative)
    auth_failure_max_delay: float = setting(15.0, "Longest delay (seconds) a failed login "
                                            "is held back.", check_non_negative)
    auth_cache_ttl: float = setting(300.0, "Seconds a successful login is remembered in "
                                    "memory (keyed by a salted hash), so clients that "
                                    "reconnect often skip the password hash; 0 = off. A "
                                    "changed password takes up to this long to apply.",
                                    check_non_negative)


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


def check_plaintext_auth(value: str) -> None:
    if value not in ("always", "loopback", "never"):
        raise ValueError("must be one of always, loopback, never")


@dataclass(frozen=True)
class Pop3Settings:
    plaintext_auth: str = setting("loopback", "Where USER/PASS and AUTH PLAIN work without "
                                  "TLS: always, loopback (only from 127.0.0.0/8 and ::1; "
                                  "elsewhere STLS or pop3s first) or never.",
                                  check_plaintext_auth)
    idle_timeout: float = setting(600.0, "Seconds of client silence before the session is "
                                  "closed (RFC 1939 §3: at least 10 minutes).", check_positive)
    max_line_length: int = setting(2048, "Longest command line accepted, in bytes with CRLF.",
                                   check_positive)
    max_bad_commands: int = setting(20, "Unknown or malformed commands per session before "
                                    "the connection is closed.", check_positive)
    max_auth_failures: int = setting(3, "Failed logins per session before it is closed.",
                                     check_positive)
    auth_failure_delay: float = setting(2.0, "Seconds a failed login's answer is held back, "
                                        "doubling with each recent failure from the same IP.",
                                        check_non_negative)
    ip_failure_limit: int = setting(10, "Failed logins from one IP within ip_failure_window "
                                    "after which its logins are refused outright.",
                                    check_positive)
    ip_failure_window: float = setting(600.0, "Seconds a failed login counts against its IP.",
                                       check_positive)


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
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    sieve: SieveSettings = field(default_factory=SieveSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)
    senderauth: SenderAuthSettings = field(default_factory=SenderAuthSettings)
    dmarc: DmarcSettings = field(default_factory=DmarcSettings)
    pop3: Pop3Settings = field(default_factory=Pop3Settings)
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
