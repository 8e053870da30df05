"""The four MTA listeners and what each offers; the EHLO reply computed from config."""

from __future__ import annotations

from dataclasses import dataclass

from mailyard.mta.sasl import MECHANISMS


@dataclass(frozen=True)
class Profile:
    """What one listener offers: the differences between smtp, submission(s), reinject."""

    service: str
    starttls: bool = True          # offer STARTTLS (when not already TLS)
    implicit_tls: bool = False     # TLS from the first byte (465)
    auth: bool = False             # offer AUTH PLAIN/LOGIN
    auth_required: bool = False    # MAIL needs AUTH first (530 5.7.0)
    trusted_only: bool = False     # refuse clients outside trusted_networks
    checks: bool = True            # run the RCPT policy chain


PROFILES = {
    "smtp": Profile("smtp"),
    "submission": Profile("submission", auth=True, auth_required=True),
    "submissions": Profile("submissions", starttls=False, implicit_tls=True, auth=True,
                           auth_required=True),
    "reinject": Profile("reinject", starttls=False, trusted_only=True, checks=False),
}


def size_limit(settings, profile: Profile) -> int:
    """The SIZE a listener enforces. Reinjection allows a little more: the filter adds
    headers to messages that were accepted at the limit, and must not be refused for it."""
    limit = settings.smtp.max_message_size
    if profile.service == "reinject":
        return limit + max(65536, limit // 10)
    return limit


def ehlo_lines(settings, helo: str, client_ip: str, *, starttls: bool, auth: bool,
               size: int) -> list[str]:
    """The EHLO reply lines (RFC 5321 §4.1.1.1): every keyword follows from the config and
    the session (STARTTLS until TLS is on, AUTH only where and when it may be used)."""
    smtp = settings.smtp
    lines = [f"{settings.server.hostname} Hello {helo} [{client_ip}]",
             "PIPELINING", f"SIZE {size}", "8BITMIME"]   # RFC 2920, 1870, 6152
    if smtp.smtputf8:
        lines.append("SMTPUTF8")                                         # RFC 6531
    lines += ["ENHANCEDSTATUSCODES", "DSN"]                              # RFC 2034, 3461
    if starttls:
        lines.append("STARTTLS")                                         # RFC 3207
    if auth:
        lines.append("AUTH " + " ".join(MECHANISMS))                     # RFC 4954
    return lines
