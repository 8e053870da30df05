"""Password hashing (argon2id) and verification of imported Dovecot schemes.

Stored hashes carry a Dovecot-style scheme prefix: `{ARGON2ID}$argon2id$...`,
`{SHA512-CRYPT}$6$...`, `{SHA256-CRYPT}$5$...`, `{BLF-CRYPT}$2y$...`, `{PLAIN}secret`. New
passwords are always argon2id; an imported weaker hash is upgraded at the next good login.
"""

from __future__ import annotations

import hmac

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 second recommended parameters

SCHEMES = ("ARGON2ID", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN")


class UnsupportedScheme(ValueError):
    pass


def hash_password(password: str) -> str:
    return "{ARGON2ID}" + _hasher.hash(password)


def split_scheme(stored: str) -> tuple[str, str]:
    """`{SCHEME}rest` → (SCHEME, rest); bare crypt strings are recognised by their prefix."""
    if stored.startswith("{"):
        scheme, sep, rest = stored[1:].partition("}")
        if not sep:
            raise UnsupportedScheme("unterminated {SCHEME} prefix")
        scheme = scheme.upper()
        if scheme == "CLEAR":
            scheme = "PLAIN"
        if scheme in ("BLF-CRYPT", "BCRYPT"):
            scheme = "BLF-CRYPT"
        if scheme == "CRYPT":  # Dovecot's generic crypt(3): decide by the hash's own prefix
            return split_scheme(rest)
        if scheme not in SCHEMES:
            raise UnsupportedScheme(f"unsupported password scheme {{{scheme}}} "
                                    f"(supported: {', '.join(SCHEMES)})")
        return scheme, rest
    for prefix, scheme in (("$argon2id$", "ARGON2ID"), ("$6$", "SHA512-CRYPT"),
                           ("$5$", "SHA256-CRYPT"), ("$2", "BLF-CRYPT")):
        if stored.startswith(prefix):
            return scheme, stored
    raise UnsupportedScheme("unknown password hash format (expected a {SCHEME} prefix)")


def verify_password(stored: str, password: str) -> bool:
    try:
        scheme, value = split_scheme(stored)
    except UnsupportedScheme:
        return False
    if scheme == "ARGON2ID":
        try:
            return _hasher.verify(value, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    if scheme == "PLAIN":
        return hmac.compare_digest(value.encode(), password.encode())
    if scheme == "BLF-CRYPT":
        try:
            return bcrypt.checkpw(password.encode(), value.encode())
        except ValueError:
            return False
    if scheme in ("SHA512-CRYPT", "SHA256-CRYPT"):
        from passlib.hash import sha256_crypt, sha512_crypt

        handler = sha512_crypt if scheme == "SHA512-CRYPT" else sha256_crypt
        try:
            return handler.verify(password, value)
        except ValueError:
            return False
    return False


def needs_upgrade(stored: str) -> bool:
    """True for anything that is not a current-parameters argon2id hash."""
    try:
        scheme, value = split_scheme(stored)
    except UnsupportedScheme:
        return True
    if scheme != "ARGON2ID":
        return True
    try:
        return _hasher.check_needs_rehash(value)
    except InvalidHashError:
        return True
