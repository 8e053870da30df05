"""SMTP replies: the `Reply` record, its wire format, and named constants.

A reply is a three-digit code (RFC 5321 §4.2), an optional enhanced status code
(RFC 3463 / RFC 2034 `class.subject.detail`) and one or more lines of text. The server
codec formats them; the client codec parses them. Use the constants below instead of magic
numbers so tests and policy code read as the RFCs do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: `code`, `enhanced` ("5.7.1" or None) and its text lines."""

    code: int
    enhanced: str | None = None
    text: str | tuple[str, ...] = ""

    @property
    def lines(self) -> tuple[str, ...]:
        if isinstance(self.text, str):
            return tuple(self.text.split("\n")) if self.text else ("",)
        return tuple(self.text) or ("",)

    @property
    def message(self) -> str:
        """All text lines joined with a newline (without codes)."""
        return "\n".join(self.lines)

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def with_text(self, text: str | tuple[str, ...]) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def __str__(self) -> str:
        head = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        return head + " / ".join(self.lines)


def format_reply(code: int, enhanced: str | None, text: str | tuple[str, ...] | list[str],
                 ) -> bytes:
    """The wire form of a reply, multi-line with `code-` continuation (RFC 5321 §4.2.1)."""
    if not 200 <= code <= 599:
        raise ValueError(f"reply code out of range: {code}")
    if enhanced is not None and not _ENHANCED_RE.match(enhanced):
        raise ValueError(f"malformed enhanced status code: {enhanced!r}")
    if enhanced is not None and enhanced[0] != str(code)[0]:
        raise ValueError(f"enhanced code {enhanced} does not match reply class {code}")
    if isinstance(text, str):
        lines = text.split("\n") if text else [""]
    else:
        lines = list(text) or [""]
    out = []
    for i, line in enumerate(lines):
        # Never let reply text smuggle a line break onto the wire.
        line = line.replace("\r", " ").replace("\n", " ")
        sep = "-" if i < len(lines) - 1 else " "
        prefix = f"{code}{sep}{enhanced} " if enhanced else f"{code}{sep}"
        out.append(prefix + line)
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


# -- named replies (RFC 5321 §4.2.2/§4.2.3, RFC 3463, RFC 4954, RFC 3207, RFC 1870) -------------
# Positive
OK = Reply(250, "2.0.0", "Ok")
SENDER_OK = Reply(250, "2.1.0", "Ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Ok")
RESET_OK = Reply(250, "2.0.0", "Ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
CLOSING = Reply(221, "2.0.0", "Bye")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_CONTINUE = Reply(334, None, "")
VRFY_CANNOT = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt "
                    "delivery")
HELP = Reply(214, "2.0.0", "See RFC 5321")

# Transient
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing channel")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing channel")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing channel")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing")
GREYLISTED = Reply(451, "4.7.1", "Greylisted, please try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
TEMP_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")

# Permanent: syntax and sequence
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.6", "Line too long")
BARE_NEWLINE_COMMAND = Reply(500, "5.5.2", "Bare <CR> or <LF> not allowed; lines end "
                             "with <CR><LF>")
PARAM_SYNTAX = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
ADDRESS_SYNTAX = Reply(501, "5.1.3", "Bad address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NESTED_MAIL = Reply(503, "5.5.1", "Error: nested MAIL command")
NEED_MAIL = Reply(503, "5.5.1", "Error: need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Error: need RCPT command")
NEED_HELO = Reply(503, "5.5.1", "Error: send HELO/EHLO first")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
PARAM_NOT_IMPLEMENTED = Reply(504, "5.5.4", "Command parameter not implemented")
UNKNOWN_PARAM = Reply(555, "5.5.4", "MAIL FROM/RCPT TO parameters not recognized or not "
                      "implemented")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
MUST_STARTTLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested "
                            "authentication mechanism")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")

# Permanent: policy and content
MAILBOX_UNKNOWN = Reply(550, "5.1.1", "Recipient address rejected: User unknown")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "Error: no valid recipients")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
ACCESS_DENIED = Reply(554, "5.7.1", "Access denied")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NON_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
BARE_NEWLINE_DATA = Reply(554, "5.6.0", "Message refused: bare <CR> or <LF> in message "
                          "content (lines must end with <CR><LF>)")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
