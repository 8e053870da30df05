"""SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) for SMTP AUTH, sans-I/O.

`SaslExchange(mechanism)` takes the client's base64 lines (the AUTH initial response, then
each line after a 334) and answers with the next challenge, or with the (login, password)
pair once complete. It never touches the account store.
"""

from __future__ import annotations

import base64
import binascii

MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USERNAME = base64.b64encode(b"Username:").decode()
LOGIN_PASSWORD = base64.b64encode(b"Password:").decode()


class SaslError(ValueError):
    """Undecodable or malformed client data."""


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64") from None


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError("invalid UTF-8") from None


class SaslExchange:
    """One AUTH exchange. `step(line)` → ("challenge", base64 text) or ("done", (login,
    password)). `start(initial)` handles the optional initial response."""

    def __init__(self, mechanism: str):
        if mechanism not in MECHANISMS:
            raise SaslError(f"unsupported mechanism {mechanism}")
        self.mechanism = mechanism
        self._username: str | None = None

    def start(self, initial: str | None):
        if self.mechanism == "PLAIN":
            return ("challenge", "") if initial is None else self.step(initial)
        if initial is None:
            return "challenge", LOGIN_USERNAME
        return self.step(initial)

    def step(self, line: str):
        data = _b64(line)
        if self.mechanism == "PLAIN":
            # RFC 4616 §2: [authzid] NUL authcid NUL passwd
            parts = data.split(b"\x00")
            if len(parts) != 3 or not parts[1]:
                raise SaslError("malformed PLAIN response")
            authzid, login, password = (_utf8(p) for p in parts)
            if authzid and authzid != login:
                raise SaslError("authorization identity differs from login")
            return "done", (login, password)
        if self._username is None:
            self._username = _utf8(data)
            if not self._username:
                raise SaslError("empty username")
            return "challenge", LOGIN_PASSWORD
        return "done", (self._username, _utf8(data))
