"""SMTP paths, mailboxes and ESMTP parameters (RFC 5321 §4.1.2, RFC 6531, RFC 3461).

`parse_path(text)` turns the argument of MAIL FROM / RCPT TO (`<local@domain>`, `<>`,
`<@relay1,@relay2:user@domain>`) into a `Path`; `parse_params(text)` turns the
`KEY=VALUE ...` tail into an ordered dict. Both raise `AddressError`, carrying the reply a
server should give, on anything the grammar does not allow. The grammar, quoted from
RFC 5321 §4.1.2 (with RFC 6531 §3.3 extending atext/qtext/sub-domain to UTF-8):

    Reverse-path   = Path / "<>"
    Forward-path   = Path
    Path           = "<" [ A-d-l ":" ] Mailbox ">"
    A-d-l          = At-domain *( "," At-domain )
    At-domain      = "@" Domain
    Mailbox        = Local-part "@" ( Domain / address-literal )
    Local-part     = Dot-string / Quoted-string
    Dot-string     = Atom *("."  Atom)
    Quoted-string  = DQUOTE *QcontentSMTP DQUOTE
    QcontentSMTP   = qtextSMTP / quoted-pairSMTP
    quoted-pairSMTP = %d92 %d32-126
    qtextSMTP      = %d32-33 / %d35-91 / %d93-126
    Domain         = sub-domain *("." sub-domain)
    sub-domain     = Let-dig [Ldh-str]
    address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
                            General-address-literal ) "]"
    esmtp-param    = esmtp-keyword ["=" esmtp-value]
    esmtp-keyword  = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    esmtp-value    = 1*(%d33-60 / %d62-126)   ; RFC 6531 adds UTF8-non-ascii

Source routes are parsed and dropped: RFC 5321 §4.1.1.3 / Appendix C say a server SHOULD
ignore them, so `<@a,@b:user@d>` means `user@d` (the route is kept on `Path.route` so policy
can log it). A trailing dot on a domain is a syntax error, not an alias of the domain.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cached_property

from mailyard.smtp import replies
from mailyard.smtp.replies import Reply


class AddressError(ValueError):
    """A path or parameter the grammar does not allow; `reply` is what to answer."""

    def __init__(self, message: str, reply: Reply = replies.ADDRESS_SYNTAX):
        super().__init__(message)
        self.reply = reply.with_text(f"{reply.message}: {message}")


# RFC 5322 atext (RFC 5321 §4.1.2 uses it for Atom); UTF-8 allowed when `utf8`.
_ATEXT_ASCII = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_ATOM_ASCII = re.compile(rf"[{_ATEXT_ASCII}]+\Z")
_ATOM_UTF8 = re.compile(rf"(?:[{_ATEXT_ASCII}]|[^\x00-\x7f])+\Z")
_LDH_LABEL_ASCII = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\Z")
_LDH_LABEL_UTF8 = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*"
                             r"(?:[A-Za-z0-9]|[^\x00-\x7f]))?\Z")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_ESMTP_VALUE_ASCII = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")
_ESMTP_VALUE_UTF8 = re.compile(r"(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f])+\Z")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[\x21-\x5a\x5e-\x7e]+\Z")

MAX_LOCAL_PART = 64      # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255         # RFC 5321 §4.5.3.1.2
MAX_PATH = 256           # RFC 5321 §4.5.3.1.3 (including the angle brackets)


@dataclass(frozen=True)
class Mailbox:
    """`local@domain`. `local` is unquoted (quotes and backslashes removed); `domain` as
    written, or an address literal with its brackets (`[192.0.2.1]`, `[IPv6:...]`)."""

    local: str
    domain: str

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def needs_quoting(self) -> bool:
        return not all(_ATOM_UTF8.match(a) for a in self.local.split("."))

    @cached_property
    def _text(self) -> str:
        if self.needs_quoting:
            quoted = self.local.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{quoted}"@{self.domain}'
        return f"{self.local}@{self.domain}"

    def __str__(self) -> str:
        return self._text


@dataclass(frozen=True)
class Path:
    """A reverse- or forward-path. `mailbox` None is the null path `<>`."""

    mailbox: Mailbox | None
    route: tuple[str, ...] = ()       # source-route domains, ignored for routing
    postmaster: bool = False          # RCPT TO:<Postmaster> without a domain (§4.1.1.3)

    @property
    def address(self) -> str:
        if self.postmaster:
            return "postmaster"
        return "" if self.mailbox is None else str(self.mailbox)

    @property
    def is_null(self) -> bool:
        return self.mailbox is None and not self.postmaster

    def __str__(self) -> str:
        return f"<{self.address}>"


def _check_domain(domain: str, utf8: bool) -> None:
    if not domain:
        raise AddressError("empty domain")
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain too long")
    label_re = _LDH_LABEL_UTF8 if utf8 else _LDH_LABEL_ASCII
    for label in domain.split("."):
        if not label or not label_re.match(label):
            raise AddressError(f"bad domain {domain!r}")


def _check_literal(literal: str) -> None:
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
            return
        except ValueError:
            raise AddressError(f"bad IPv6 address literal {literal!r}") from None
    try:
        ipaddress.IPv4Address(inner)
        return
    except ValueError:
        pass
    if _GENERAL_LITERAL.match(inner):
        return
    raise AddressError(f"bad address literal {literal!r}")


def parse_domain(text: str, *, utf8: bool = True, literal_ok: bool = True) -> str:
    """Check a Domain (or address-literal); return it unchanged. Raises AddressError."""
    if literal_ok and text.startswith("[") and text.endswith("]"):
        _check_literal(text)
        return text
    _check_domain(text, utf8)
    return text


def _parse_local(text: str, utf8: bool) -> str:
    if text.startswith('"'):
        # Quoted-string: walk it, honouring quoted-pairSMTP.
        out, i = [], 1
        while i < len(text):
            ch = text[i]
            if ch == "\\":
                if i + 1 >= len(text):
                    raise AddressError("unterminated quoted-pair")
                nxt = text[i + 1]
                if not (" " <= nxt <= "~" or (utf8 and ord(nxt) > 127)):
                    raise AddressError("bad quoted-pair")
                out.append(nxt)
                i += 2
                continue
            if ch == '"':
                if i != len(text) - 1:
                    raise AddressError("text after closing quote")
                return "".join(out)
            if not (ch in " !" or "#" <= ch <= "[" or "]" <= ch <= "~"
                    or (utf8 and ord(ch) > 127)):
                raise AddressError("bad character in quoted local part")
            out.append(ch)
            i += 1
        raise AddressError("unterminated quoted local part")
    atom_re = _ATOM_UTF8 if utf8 else _ATOM_ASCII
    for atom in text.split("."):
        if not atom or not atom_re.match(atom):
            raise AddressError(f"bad local part {text!r}")
    return text


def _split_mailbox(text: str) -> tuple[str, str]:
    """Split at the '@' that ends the local part (which may be quoted and contain '@')."""
    if text.startswith('"'):
        i, escaped = 1, False
        while i < len(text):
            ch = text[i]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                break
            i += 1
        end = i + 1
        if end >= len(text) or text[end] != "@":
            raise AddressError("expected '@' after quoted local part")
        return text[:end], text[end + 1:]
    local, sep, domain = text.rpartition("@")
    if not sep:
        raise AddressError("missing '@domain'")
    return local, domain


def parse_mailbox(text: str, *, utf8: bool = True) -> Mailbox:
    """Parse `local@domain` (no angle brackets). Raises AddressError."""
    local_text, domain = _split_mailbox(text)
    if not local_text:
        raise AddressError("empty local part")
    local = _parse_local(local_text, utf8)
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    parse_domain(domain, utf8=utf8)
    return Mailbox(local, domain)


def parse_path(text: str, *, utf8: bool = True, null_ok: bool = False,
               postmaster_ok: bool = False) -> Path:
    """Parse `<...>`; `null_ok` allows `<>` (reverse-path), `postmaster_ok` allows
    `<Postmaster>` (forward-path, RFC 5321 §4.1.1.3). Raises AddressError."""
    if len(text.encode("utf-8")) > MAX_PATH:
        raise AddressError("path too long")
    if not (text.startswith("<") and text.endswith(">")) or len(text) < 2:
        raise AddressError("address must be enclosed in <>")
    inner = text[1:-1]
    if inner == "":
        if null_ok:
            return Path(None)
        raise AddressError("null address not allowed here")
    if postmaster_ok and inner.lower() == "postmaster":
        return Path(None, postmaster=True)
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        adl, sep, inner = inner.partition(":")
        if not sep:
            raise AddressError("source route without ':'")
        hops = []
        for at_domain in adl.split(","):
            if not at_domain.startswith("@"):
                raise AddressError("bad source route")
            hops.append(parse_domain(at_domain[1:], utf8=utf8))
        route = tuple(hops)
    return Path(parse_mailbox(inner, utf8=utf8), route)


def parse_params(text: str, *, utf8: bool = False) -> dict[str, str | None]:
    """Parse `KEY=VALUE KEY ...` (keys upper-cased, duplicates refused). Raises AddressError."""
    params: dict[str, str | None] = {}
    value_re = _ESMTP_VALUE_UTF8 if utf8 else _ESMTP_VALUE_ASCII
    for token in text.split(" "):
        if token == "":
            continue
        key, sep, value = token.partition("=")
        if not _ESMTP_KEYWORD.match(key):
            raise AddressError(f"bad parameter {token!r}", replies.PARAM_SYNTAX)
        if sep and not value_re.match(value):
            raise AddressError(f"bad value for {key}", replies.PARAM_SYNTAX)
        key = key.upper()
        if key in params:
            raise AddressError(f"duplicate parameter {key}", replies.PARAM_SYNTAX)
        params[key] = value if sep else None
    return params


def split_path_and_params(arg: str) -> tuple[str, str]:
    """Split `<path> params` where the path may contain quoted spaces."""
    if not arg.startswith("<"):
        raise AddressError("address must be enclosed in <>")
    in_quote = escaped = False
    for i, ch in enumerate(arg):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quote:
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            return arg[:i + 1], arg[i + 1:]
    raise AddressError("address must be enclosed in <>")


# -- xtext (RFC 3461 §4): ENVID and ORCPT values ------------------------------------------------

def xtext_decode(value: str) -> str:
    """Decode `+XX` hex escapes. Raises AddressError on a malformed escape."""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "+":
            hexpart = value[i + 1:i + 3]
            if len(hexpart) != 2 or not re.fullmatch(r"[0-9A-F]{2}", hexpart):
                raise AddressError("bad xtext escape", replies.PARAM_SYNTAX)
            out.append(chr(int(hexpart, 16)))
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def xtext_encode(value: str) -> str:
    return "".join(c if "!" <= c <= "~" and c not in "+=" else
                   "".join(f"+{b:02X}" for b in c.encode("utf-8")) for c in value)


# -- known ESMTP parameters and their syntax -------------------------------------------------

MAIL_PARAMS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
RCPT_PARAMS = frozenset({"NOTIFY", "ORCPT"})


def check_mail_params(params: dict[str, str | None], supported: frozenset[str]) -> None:
    """Validate MAIL FROM parameters (RFC 1870, 6152, 6531, 3461, 4954). Raises AddressError."""
    for key, value in params.items():
        if key not in supported:
            raise AddressError(f"{key} not supported", replies.UNKNOWN_PARAM)
        if key == "SIZE":
            if value is None or not value.isdigit() or len(value) > 20:
                raise AddressError("SIZE needs a number", replies.PARAM_SYNTAX)
        elif key == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME", "BINARYMIME"):
                raise AddressError("BODY must be 7BIT or 8BITMIME", replies.PARAM_SYNTAX)
            if value.upper() == "BINARYMIME":  # needs CHUNKING, which we do not offer
                raise AddressError("BINARYMIME needs BDAT", replies.PARAM_NOT_IMPLEMENTED)
        elif key == "SMTPUTF8":
            if value is not None:
                raise AddressError("SMTPUTF8 takes no value", replies.PARAM_SYNTAX)
        elif key == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise AddressError("RET must be FULL or HDRS", replies.PARAM_SYNTAX)
        elif key in ("ENVID", "AUTH"):
            if value is None:
                raise AddressError(f"{key} needs a value", replies.PARAM_SYNTAX)
            xtext_decode(value)


def check_rcpt_params(params: dict[str, str | None], supported: frozenset[str]) -> None:
    """Validate RCPT TO parameters (RFC 3461 §4.1, §4.2). Raises AddressError."""
    for key, value in params.items():
        if key not in supported:
            raise AddressError(f"{key} not supported", replies.UNKNOWN_PARAM)
        if key == "NOTIFY":
            items = (value or "").upper().split(",")
            if not value or any(i not in ("NEVER", "SUCCESS", "FAILURE", "DELAY")
                                for i in items) or ("NEVER" in items and len(items) > 1):
                raise AddressError("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY",
                                   replies.PARAM_SYNTAX)
        elif key == "ORCPT":
            addr_type, sep, addr = (value or "").partition(";")
            if not sep or not addr_type or not addr:
                raise AddressError("ORCPT must be addr-type;xtext", replies.PARAM_SYNTAX)
            xtext_decode(addr)
