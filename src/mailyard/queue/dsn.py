"""Delivery status notifications (RFC 3464 format, RFC 3461 semantics). Pure: bytes out.

`build_dsn` makes the multipart/report a sender receives when some of its recipients
failed (action "failed"), are still being retried after `[queue] delay_warning` ("delayed"),
or — when they asked with NOTIFY=SUCCESS — were delivered ("delivered") or handed to a
server that does not speak DSN ("relayed"). The queue decides who is reported; this module
only formats, so it is tested by parsing its output back with the `email` package.
"""

from __future__ import annotations

import email.utils
import secrets
import time
from dataclasses import dataclass

from mailyard.envelope import Envelope, Recipient
from mailyard.queue.records import RecipientState
from mailyard.queue.routing import INTERNAL

FAILED = "failed"
DELAYED = "delayed"
DELIVERED = "delivered"
RELAYED = "relayed"

# Bounces quote at most this much of the original message; beyond it, only the headers.
MAX_RETURNED = 1 << 20

_SUBJECTS = {
    FAILED: "Undelivered Mail Returned to Sender",
    DELAYED: "Delayed Mail (still being retried)",
    DELIVERED: "Successful Mail Delivery Report",
    RELAYED: "Successful Mail Delivery Report",
}

_EXPLANATIONS = {
    FAILED: "I'm sorry to have to inform you that your message could not be delivered "
            "to one or more recipients. The reason is given for each one below.",
    DELAYED: "Your message could not be delivered yet to one or more recipients. "
             "Delivery will be retried; you do not need to send it again.",
    DELIVERED: "Your message was delivered to the recipients listed below.",
    RELAYED: "Your message was passed on to a server that does not send delivery "
             "notifications; this is the last notification you will get for it.",
}


@dataclass(frozen=True)
class ReportedRecipient:
    """One per-recipient block of the report."""

    state: RecipientState
    action: str
    will_retry_until: float | None = None


def _clean(text: str) -> str:
    """One header-safe line: no CR/LF (a remote's multi-line reply is joined)."""
    return " ".join(text.replace("\r", " ").replace("\n", " ").split())


def _date(ts: float) -> str:
    return email.utils.formatdate(ts, localtime=False)


def _headers_only(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
        return message if end < 0 else message[:end + 2]
    return message[:end + 4]


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def build_dsn(envelope: Envelope, message: bytes, reported: list[ReportedRecipient],
              hostname: str, arrival: float, queue_id: str,
              now: float | None = None) -> bytes:
    """The DSN message (CRLF line ends) about `reported` recipients of `envelope`."""
    now = time.time() if now is None else now
    action = reported[0].action
    boundary = f"=_mailyard_{secrets.token_hex(12)}"
    postmaster = f"MAILER-DAEMON@{hostname}"
    head = [
        f"From: Mail Delivery System <{postmaster}>",
        f"To: <{_clean(envelope.sender)}>",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {_date(now)}",
        f"Message-ID: <{secrets.token_hex(10)}.{queue_id}@{hostname}>",
        "Auto-Submitted: auto-replied",                     # RFC 3834 §5
        "MIME-Version: 1.0",
        ('Content-Type: multipart/report; report-type=delivery-status;\r\n'
         f' boundary="{boundary}"'),
    ]
    human = [_EXPLANATIONS[action], ""]
    for r in reported:
        reason = r.state.reply.line() if r.state.reply else ""
        where = f" (remote server {r.state.reply.remote})" if r.state.reply and \
            r.state.reply.remote else ""
        human.append(f"<{r.state.address}>: {_clean(reason)}{where}")
    # RFC 3464 §2.2: per-message fields.
    per_message = [f"Reporting-MTA: dns; {hostname}"]
    if envelope.dsn_envid:
        per_message.append(f"Original-Envelope-Id: {_clean(envelope.dsn_envid)}")
    per_message.append(f"X-Mailyard-Queue-ID: {queue_id}")
    per_message.append(f"Arrival-Date: {_date(arrival)}")
    # RFC 3464 §2.3: per-recipient fields, one block each, blank-line separated.
    blocks = []
    for r in reported:
        block = []
        if r.state.orcpt:
            addr_type, _, addr = r.state.orcpt.partition(";")
            block.append(f"Original-Recipient: {addr_type.strip() or 'rfc822'}; "
                         f"{_clean(addr)}")
        block.append(f"Final-Recipient: rfc822; {_clean(r.state.address)}")
        block.append(f"Action: {r.action}")
        reply = r.state.reply
        status = reply.status() if reply else ("2.0.0" if r.action in (DELIVERED, RELAYED)
                                               else "4.0.0")
        block.append(f"Status: {status}")
        if reply and reply.remote:
            block.append(f"Remote-MTA: dns; {_clean(reply.remote)}")
        if reply and reply.remote:
            # The remote's own words (RFC 3464 §2.3.6), which is what a sender needs.
            block.append(f"Diagnostic-Code: smtp; {_clean(reply.line())}")
        elif reply and not reply.success:
            block.append(f"Diagnostic-Code: X-mailyard; {_clean(reply.line())}")
        block.append(f"Last-Attempt-Date: {_date(now)}")
        if r.will_retry_until:
            block.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\r\n".join(block))
    status_text = "\r\n".join(per_message) + "\r\n\r\n" + "\r\n\r\n".join(blocks) + "\r\n"

    # RFC 3461 §4.3: RET=HDRS returns only the headers; RET=FULL (or the default) the
    # message, except that a delay or success notice and a huge message get headers only.
    full = envelope.dsn_ret != "HDRS" and action == FAILED and len(message) <= MAX_RETURNED
    original = _crlf(message if full else _headers_only(message))
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    parts = [
        ("\r\n".join(head) + "\r\n\r\n"
         "This is a MIME-encapsulated message.\r\n\r\n"
         f"--{boundary}\r\n"
         "Content-Description: Notification\r\n"
         "Content-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: 8bit\r\n\r\n"
         + "\r\n".join(human) + "\r\n\r\n"
         f"--{boundary}\r\n"
         "Content-Description: Delivery report\r\n"
         "Content-Type: message/delivery-status\r\n\r\n"
         + status_text + "\r\n"
         f"--{boundary}\r\n"
         + ("Content-Description: Undelivered Message\r\n"
            "Content-Type: message/rfc822\r\n" if full else
            "Content-Description: Message Headers\r\n"
            "Content-Type: text/rfc822-headers\r\n")
         + "Content-Transfer-Encoding: 8bit\r\n\r\n").encode("utf-8"),
        original,
        f"\r\n--{boundary}--\r\n".encode("ascii"),
    ]
    return b"".join(parts)


def dsn_envelope(original: Envelope, now: float) -> Envelope:
    """The envelope of a DSN: null sender (RFC 3461 §6.2, so it is never bounced back),
    to the original sender, delivered directly (no scanning of our own report)."""
    return Envelope(sender="", recipients=(Recipient(address=original.sender),),
                    received_via=INTERNAL, body="8BITMIME", smtputf8=original.smtputf8,
                    received_at=now)
