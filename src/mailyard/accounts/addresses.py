"""Mail address normalisation for lookups.

Domains compare case-insensitively and are stored in their IDNA A-label form (RFC 5890).
Local parts: a quoted local part that needs no quoting is the same mailbox as the unquoted
one (RFC 5321 §4.1.2); beyond that RFC 5321 §2.4 leaves case to the host that owns the
mailbox, and mailyard, like Postfix and Dovecot, folds it: `Alice@` and `alice@` are one user.
"""

from __future__ import annotations

import re

# RFC 5321 §4.1.2 Dot-string = Atom *("." Atom); atext per RFC 5322 §3.2.3.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]"
DOT_STRING = re.compile(rf"^{_ATEXT}+(?:\.{_ATEXT}+)*$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AddressError(ValueError):
    """An address that cannot name a mailbox here."""


def normalize_domain(domain: str) -> str:
    """Lower-case A-label form; raises AddressError for what is not a host name."""
    d = domain.strip()
    if not d or d.endswith(".") or d.startswith(".") or ".." in d:
        raise AddressError(f"not a domain name: {domain!r}")
    try:
        ascii_form = d.encode("idna").decode("ascii") if not d.isascii() else d
    except UnicodeError:
        raise AddressError(f"not a valid internationalised domain name: {domain!r}") from None
    ascii_form = ascii_form.lower()
    if len(ascii_form) > 253 or not all(_LABEL.match(label) for label in ascii_form.split(".")):
        raise AddressError(f"not a domain name: {domain!r}")
    return ascii_form


def unquote_local(local: str) -> str:
    """`"john.doe"` → `john.doe`; quoted forms that need their quotes are kept quoted."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if DOT_STRING.match(inner):
            return inner
        return local
    return local


def split_address(address: str) -> tuple[str, str]:
    """`local@domain` → (local, domain) normalised; AddressError if it is not one mailbox."""
    addr = address.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1]
    local, sep, domain = addr.rpartition("@")
    if not sep or not local or not domain:
        raise AddressError(f"not an address (local@domain): {address!r}")
    if domain.startswith("["):
        raise AddressError(f"address literals are not local mailboxes: {address!r}")
    local = unquote_local(local)
    if local[0] != '"' and not DOT_STRING.match(local):
        raise AddressError(f"not a valid local part: {address!r}")
    if len(local.encode()) > 64:
        raise AddressError(f"local part longer than 64 octets: {address!r}")
    return local.lower(), normalize_domain(domain)


def normalize_address(address: str) -> str:
    local, domain = split_address(address)
    return f"{local}@{domain}"
