"""ENVELOPE (RFC 3501 §7.4.2): the parsed address fields of a header, kept raw.

Header values are given as they appear (encoded-words are not decoded; clients do that).
Address lists follow RFC 5322 §3.4 loosely enough for real mail: display names, quoted
strings, comments, source routes, and groups (`undisclosed-recipients:;`), which IMAP writes
as a start marker (NIL NIL "name" NIL) and an end marker (NIL NIL NIL NIL).
"""

from __future__ import annotations

import re

from mailyard.imap.proto.format import NIL, nstring

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[<>,:;@]|[^\s"(),:;<>@]+|\s+',
                     re.DOTALL)


def _unquote(tok: bytes) -> bytes:
    if tok.startswith(b'"'):
        return re.sub(rb"\\(.)", rb"\1", tok[1:-1] if tok.endswith(b'"') else tok[1:])
    return tok


def _address(words: list[bytes], angle: list[bytes] | None) -> bytes | None:
    """(name adl mailbox host) for one mailbox; None if there is nothing usable."""
    if angle is not None:
        spec = angle
        name = b" ".join(_unquote(w) for w in words if not w.startswith(b"(")) or None
        route = None
        if b":" in spec:   # obsolete source route <@a,@b:user@host>
            i = spec.index(b":")
            route = b"".join(spec[:i])
            spec = spec[i + 1:]
    else:
        spec = [w for w in words if not w.startswith(b"(")]
        comments = [w[1:-1] for w in words if w.startswith(b"(") and w.endswith(b")")]
        name = comments[-1] if comments else None
        route = None
    if not spec:
        return None if angle is None else b"(" + b" ".join(
            [nstring(name), NIL, NIL, NIL]) + b")"
    if b"@" in spec:
        i = len(spec) - 1 - spec[::-1].index(b"@")
        local = b"".join(_unquote(w) if w.startswith(b'"') else w for w in spec[:i])
        host = b"".join(spec[i + 1:])
    else:
        local = b"".join(_unquote(w) for w in spec)
        host = None
    return b"(" + b" ".join([nstring(name), nstring(route), nstring(local),
                             nstring(host)]) + b")"


def address_list(value: bytes | None) -> bytes:
    """An IMAP address list, or NIL when the header is absent or holds no address."""
    if not value:
        return NIL
    tokens = [t for t in _TOKENS.findall(value) if not t.isspace()]
    out: list[bytes] = []
    words: list[bytes] = []
    angle: list[bytes] | None = None
    in_angle = False
    group = False

    def flush() -> None:
        nonlocal words, angle
        addr = _address(words, angle)
        if addr is not None:
            out.append(addr)
        words, angle = [], None

    for tok in tokens:
        if in_angle:
            if tok == b">":
                in_angle = False
            else:
                angle.append(tok)
            continue
        if tok == b"<":
            in_angle = True
            angle = []
        elif tok == b",":
            flush()
        elif tok == b":" and not group and angle is None and words:
            name = b" ".join(_unquote(w) for w in words if not w.startswith(b"("))
            out.append(b"(NIL NIL " + nstring(name) + b" NIL)")
            words = []
            group = True
        elif tok == b";" and group:
            flush()
            out.append(b"(NIL NIL NIL NIL)")
            group = False
        else:
            words.append(tok)
    flush()
    if group:
        out.append(b"(NIL NIL NIL NIL)")
    if not out:
        return NIL
    return b"(" + b"".join(out) + b")"


def envelope(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The ENVELOPE of a header: date subject from sender reply-to to cc bcc in-reply-to
    message-id. Sender and Reply-To default to From (RFC 3501 §7.4.2)."""
    first: dict[bytes, bytes] = {}
    for name, value in headers:
        first.setdefault(name, value)
    from_ = address_list(first.get(b"from"))
    sender = address_list(first.get(b"sender")) if first.get(b"sender") else from_
    reply_to = address_list(first.get(b"reply-to")) if first.get(b"reply-to") else from_
    fields = [nstring(first.get(b"date")), nstring(first.get(b"subject")), from_,
              sender if sender != NIL else from_, reply_to if reply_to != NIL else from_,
              address_list(first.get(b"to")), address_list(first.get(b"cc")),
              address_list(first.get(b"bcc")), nstring(first.get(b"in-reply-to")),
              nstring(first.get(b"message-id"))]
    return b"(" + b" ".join(fields) + b")"
