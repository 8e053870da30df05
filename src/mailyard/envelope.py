"""Typed records that cross package lines: the SMTP envelope of one message.

The MTA builds an `Envelope` while a client talks; the queue stores it beside the message;
the filter, delivery and outbound stages read it. Frozen: a stage that needs a changed
envelope makes a new one with `dataclasses.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipient:
    """One RCPT TO, with its DSN parameters (RFC 3461)."""

    address: str                      # as given, without angle brackets ("" never happens)
    orcpt: str | None = None          # ORCPT=rfc822;addr
    notify: tuple[str, ...] = ()      # NOTIFY=SUCCESS,FAILURE,DELAY or ("NEVER",)


@dataclass(frozen=True)
class Envelope:
    """Everything about a message that is not its content."""

    sender: str                                  # MAIL FROM address; "" is the null sender
    recipients: tuple[Recipient, ...]
    received_via: str = "smtp"                   # the [listen] service it came in on
    client_ip: str = ""
    client_helo: str = ""
    client_name: str = ""                        # reverse DNS name, when known
    auth_user: str | None = None                 # authenticated login, if any
    tls: str | None = None                       # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    body: str = "7BIT"                           # BODY=7BIT|8BITMIME|BINARYMIME
    smtputf8: bool = False
    size_hint: int | None = None                 # SIZE= as announced
    dsn_ret: str | None = None                   # RET=FULL|HDRS
    dsn_envid: str | None = None                 # ENVID=
    skip_scan: bool = False                      # released from quarantine: do not rescan
    received_at: float = 0.0                     # unix time the 250 was given
    extra: dict[str, str] = field(default_factory=dict, compare=False)  # e.g. auth results

    @property
    def recipient_addresses(self) -> list[str]:
        return [r.address for r in self.recipients]
