"""Messages the delivery agent sends on a script's behalf: vacation replies, redirects.

Both go through the queue (`mailyard.queue.Queue.submit`) as mail the server generated
(`received_via="internal"`), so they are durable and retried like any other mail.
- A vacation reply (RFC 5230 §5, RFC 3834 §3.1.7) goes from the null envelope sender to the
  original sender, with `Auto-Submitted: auto-replied`, `In-Reply-To`/`References` to the
  original, and "Re: " + the original subject unless the script gave one.
- A redirect (RFC 5228 §4.2) resends the message unchanged (plus our trace headers) to the
  new address, keeping the original envelope sender.
"""

from __future__ import annotations

import email.utils
import time
from email.header import Header

from mailyard.delivery.headers import header_values
from mailyard.delivery.sieve_glue import VacationReply
from mailyard.envelope import Envelope, Recipient


def _encode_header(text: str) -> str:
    if text.isascii():
        return text.replace("\r", " ").replace("\n", " ")
    return Header(text.replace("\r", " ").replace("\n", " "), "utf-8").encode()


def vacation_message(reply: VacationReply, original: bytes, hostname: str) -> bytes:
    """The RFC 5322 text of a vacation reply."""
    subject = reply.subject
    if not subject:
        original_subject = (header_values(original, "Subject") or [""])[0]
        subject = original_subject if original_subject.lower().startswith("re:") \
            else f"Re: {original_subject}".rstrip()
    lines = [
        f"From: {_encode_header(reply.from_)}",
        f"To: <{reply.to}>",
        f"Subject: {_encode_header(subject)}",
        f"Date: {email.utils.formatdate(time.time(), localtime=True)}",
        f"Message-ID: {email.utils.make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied (vacation)",
        "Precedence: bulk",
    ]
    if reply.in_reply_to:
        lines.append(f"In-Reply-To: {reply.in_reply_to}")
        lines.append(f"References: {reply.in_reply_to}")
    if reply.mime:
        # RFC 5230 §5.7 (:mime): the reason is a MIME entity with its own headers.
        lines.append("MIME-Version: 1.0")
        body = reply.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return ("\r\n".join(lines) + "\r\n" + body).encode("utf-8")
    lines += ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit"]
    body = reply.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode("utf-8")


def vacation_envelope(reply: VacationReply) -> Envelope:
    return Envelope(sender="", recipients=(Recipient(reply.to),), received_via="internal",
                    received_at=time.time())


def redirect_envelope(sender: str, address: str, smtputf8: bool = False) -> Envelope:
    return Envelope(sender=sender, recipients=(Recipient(address),), received_via="internal",
                    smtputf8=smtputf8, received_at=time.time())
