"""Response codes and fixed texts, named (RFC 3501 §7.1, RFC 5530 codes)."""

from __future__ import annotations

OK = "OK"
NO = "NO"
BAD = "BAD"
BYE = "BYE"

# RFC 5530 response codes
AUTHENTICATIONFAILED = "[AUTHENTICATIONFAILED]"
ALREADYEXISTS = "[ALREADYEXISTS]"
NONEXISTENT = "[NONEXISTENT]"
TRYCREATE = "[TRYCREATE]"
CANNOT = "[CANNOT]"
PRIVACYREQUIRED = "[PRIVACYREQUIRED]"
CLIENTBUG = "[CLIENTBUG]"
SERVERBUG = "[SERVERBUG]"
TOOBIG = "[TOOBIG]"
LIMIT = "[LIMIT]"
UNAVAILABLE = "[UNAVAILABLE]"
EXPUNGEISSUED = "[EXPUNGEISSUED]"
READ_ONLY = "[READ-ONLY]"
READ_WRITE = "[READ-WRITE]"
CLOSED = "[CLOSED]"


def tagged(tag: str, status: str, text: str) -> bytes:
    return f"{tag} {status} {text}\r\n".encode("utf-8", "replace")


def untagged(text: str | bytes) -> bytes:
    if isinstance(text, str):
        text = text.encode("utf-8", "replace")
    return b"* " + text + b"\r\n"
