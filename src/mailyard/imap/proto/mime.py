"""A byte-offset MIME parser for IMAP: the part tree, BODY[section] extraction, BODYSTRUCTURE.

Theory of operation: `parse_message(data)` walks the message once and records, for every
entity, where its header and body start and end in the original bytes, its Content-* fields,
its children (multipart) or embedded message (message/rfc822). Nothing is decoded or copied:
sections are slices of the original bytes, so BODY[1.2.MIME] is exactly what the client
would cut out itself (RFC 3501 §6.4.5). Broken MIME never raises: a missing boundary makes a
multipart with no children, nesting is capped at `MAX_DEPTH`, and a header without the blank
line that ends it is a header with an empty body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailyard.imap.proto.format import NIL, nstring, string
from mailyard.imap.proto.types import Section

MAX_DEPTH = 40
MAX_PARTS = 5000
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"([^\x00-\x20\x7f:]+)[ \t]*:")
_TOKEN = re.compile(rb'\s*([^\s;="]+)')


@dataclass
class Entity:
    """One MIME entity: offsets into the message, Content-* fields, and sub-entities."""

    start: int
    body_start: int
    end: int
    headers: list[tuple[bytes, bytes]]          # (lower-case name, unfolded raw value)
    maintype: bytes = b"text"
    subtype: bytes = b"plain"
    params: list[tuple[bytes, bytes]] = field(default_factory=list)
    children: list[Entity] = field(default_factory=list)
    message: Entity | None = None

    @property
    def is_multipart(self) -> bool:
        return self.maintype.lower() == b"multipart"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


def split_header(data: bytes, start: int, end: int) -> int:
    """Offset where the body starts (just past the blank line), or `end` if there is none."""
    if data.startswith(b"\r\n", start) and start + 2 <= end:
        return start + 2
    if data.startswith(b"\n", start) and start + 1 <= end:
        return start + 1
    m = _HEADER_END.search(data, start, end)
    return m.end() if m else end


def parse_headers(block: bytes) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    for line in re.split(rb"\r?\n(?![ \t])", block):
        m = _FIELD.match(line)
        if m is None:
            continue
        value = re.sub(rb"\r?\n(?=[ \t])", b"", line[m.end():]).strip()
        headers.append((m.group(1).lower(), value))
    return headers


def parse_params(value: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """`type/subtype; a=b; c="d"` → (b"type/subtype", [(b"a", b"b"), (b"c", b"d")])."""
    head, _, rest = value.partition(b";")
    params: list[tuple[bytes, bytes]] = []
    pos = 0
    while pos < len(rest) and len(params) < 64:
        m = re.compile(rb'\s*([^\s;=]+)\s*=\s*').match(rest, pos)
        if m is None:
            nxt = rest.find(b";", pos)
            if nxt < 0:
                break
            pos = nxt + 1
            continue
        pos = m.end()
        if rest[pos:pos + 1] == b'"':
            out = bytearray()
            pos += 1
            while pos < len(rest) and rest[pos] != 0x22:
                if rest[pos] == 0x5C and pos + 1 < len(rest):
                    pos += 1
                out.append(rest[pos])
                pos += 1
            pos += 1
            val = bytes(out)
        else:
            m2 = re.compile(rb"[^;]*").match(rest, pos)
            val = m2.group().strip()
            pos = m2.end()
        params.append((m.group(1).lower(), val))
        nxt = rest.find(b";", pos)
        pos = len(rest) if nxt < 0 else nxt + 1
    return head.strip(), params


def parse_message(data: bytes) -> Entity:
    """The entity tree of a whole message."""
    counter = [0]
    return _entity(data, 0, len(data), 0, b"text/plain", counter)


def _entity(data: bytes, start: int, end: int, depth: int, default_type: bytes,
            counter: list[int]) -> Entity:
    counter[0] += 1
    body_start = split_header(data, start, end)
    headers = parse_headers(data[start:body_start])
    ent = Entity(start, body_start, end, headers)
    ctype = ent.header(b"content-type")
    full, params = parse_params(ctype) if ctype else (default_type, [])
    if not ctype and default_type == b"text/plain":
        params = [(b"charset", b"us-ascii")]
    maintype, _, subtype = full.partition(b"/")
    if not maintype or not subtype:
        maintype, subtype, params = b"text", b"plain", [(b"charset", b"us-ascii")]
    elif maintype.lower() == b"text" and not any(k == b"charset" for k, _ in params):
        params = [(b"charset", b"us-ascii")] + params   # RFC 2045 §5.2 default
    ent.maintype, ent.subtype, ent.params = maintype, subtype, params
    if depth >= MAX_DEPTH or counter[0] > MAX_PARTS:
        return ent
    if ent.is_multipart:
        boundary = dict(params).get(b"boundary")
        if boundary:
            child_default = b"message/rfc822" if subtype.lower() == b"digest" else b"text/plain"
            for a, b in _split_multipart(data, body_start, end, boundary):
                ent.children.append(_entity(data, a, b, depth + 1, child_default, counter))
                if counter[0] > MAX_PARTS:
                    break
    elif maintype.lower() == b"message" and subtype.lower() in (b"rfc822", b"global"):
        ent.message = _entity(data, body_start, end, depth + 1, b"text/plain", counter)
    return ent


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes):
    """(start, end) of each body part between `--boundary` delimiter lines (RFC 2046 §5.1.1).

    A delimiter is `--boundary` at the start of a line, optionally `--` (the close
    delimiter), then optional whitespace up to the line end. Scanned with bytes.find, not a
    regex: this runs on every multipart of every message when structures are first built.
    """
    marker = b"--" + boundary
    parts = []
    current = None
    pos = start
    while True:
        i = data.find(marker, pos, end)
        if i < 0:
            break
        pos = i + len(marker)
        if i != start and data[i - 1:i] != b"\n":
            continue
        j = pos
        closing = data.startswith(b"--", j) and j + 2 <= end
        if closing:
            j += 2
        while j < end and data[j] in (0x20, 0x09):
            j += 1
        if j < end and data[j] == 0x0D and j + 1 < end and data[j + 1] == 0x0A:
            line_end = j + 2
        elif j < end and data[j] == 0x0A:
            line_end = j + 1
        elif j >= end:
            line_end = end
        else:
            continue   # `--boundaryX`: a longer boundary, not ours
        if current is not None:
            # The CRLF before the delimiter belongs to the delimiter.
            stop = i
            if data[stop - 2:stop] == b"\r\n":
                stop -= 2
            elif data[stop - 1:stop] == b"\n":
                stop -= 1
            parts.append((current, max(current, stop)))
        if closing:
            return parts
        current = line_end
        pos = line_end
    if current is not None:
        parts.append((current, end))
    return parts


# -- sections ------------------------------------------------------------------------------

def find_part(root: Entity, path: tuple[int, ...]) -> Entity | None:
    """The entity a part number names (RFC 3501 §6.4.5: a non-multipart message is part 1)."""
    cur = None
    for i, k in enumerate(path):
        if i == 0:
            siblings = root.children if root.is_multipart else [root]
        elif cur.is_multipart:
            siblings = cur.children
        elif cur.message is not None:
            inner = cur.message
            siblings = inner.children if inner.is_multipart else [inner]
        else:
            return None
        if k > len(siblings):
            return None
        cur = siblings[k - 1]
    return cur


def section_bytes(data: bytes, root: Entity, section: Section) -> bytes:
    """The bytes BODY[section] names (empty when the part does not exist)."""
    if not section.part:
        target = root
    else:
        ent = find_part(root, section.part)
        if ent is None:
            return b""
        if section.text is None:
            return data[ent.body_start:ent.end]
        if section.text == "MIME":
            return data[ent.start:ent.body_start]
        if ent.message is None:
            return b""
        target = ent.message
    if section.text is None:
        return data[target.start:target.end]
    if section.text == "TEXT":
        return data[target.body_start:target.end]
    header = data[target.start:target.body_start]
    if section.text == "HEADER":
        return header
    return filter_header(header, section.fields, section.text == "HEADER.FIELDS.NOT")


def filter_header(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    wanted = {n.lower().encode() for n in names}
    out = []
    for line in re.split(rb"(?<=\n)(?![ \t])", header):
        m = _FIELD.match(line)
        if m is None:
            continue
        if (m.group(1).lower() in wanted) != exclude:
            out.append(line if line.endswith(b"\n") else line + b"\r\n")
    return b"".join(out) + b"\r\n"


# -- BODY / BODYSTRUCTURE (RFC 3501 §7.4.2) ---------------------------------------------------

def _params(params: list[tuple[bytes, bytes]]) -> bytes:
    if not params:
        return NIL
    return b"(" + b" ".join(string(k) + b" " + string(v) for k, v in params) + b")"


def _disposition(ent: Entity) -> bytes:
    value = ent.header(b"content-disposition")
    if not value:
        return NIL
    kind, params = parse_params(value)
    return b"(" + string(kind) + b" " + _params(params) + b")"


def _language(ent: Entity) -> bytes:
    value = ent.header(b"content-language")
    if not value:
        return NIL
    langs = [v.strip() for v in value.split(b",") if v.strip()]
    if len(langs) == 1:
        return string(langs[0])
    return b"(" + b" ".join(string(x) for x in langs) + b")"


def body_structure(data: bytes, ent: Entity, extended: bool) -> bytes:
    """BODYSTRUCTURE (extended=True) or BODY of an entity."""
    if ent.is_multipart:
        if ent.children:
            inner = b"".join(body_structure(data, c, extended) for c in ent.children)
        else:  # a multipart without parts: describe an empty text part (as Dovecot does)
            inner = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
        out = b"(" + inner + b" " + string(ent.subtype)
        if extended:
            out += (b" " + _params(ent.params) + b" " + _disposition(ent) + b" "
                    + _language(ent) + b" " + nstring(ent.header(b"content-location")))
        return out + b")"
    body = data[ent.body_start:ent.end]
    encoding = ent.header(b"content-transfer-encoding") or b"7bit"
    fields = [string(ent.maintype), string(ent.subtype), _params(ent.params),
              nstring(ent.header(b"content-id")), nstring(ent.header(b"content-description")),
              string(encoding.strip()), str(len(body)).encode()]
    if ent.message is not None:
        from mailyard.imap.proto.envelope import envelope

        fields.append(envelope(ent.message.headers))
        fields.append(body_structure(data, ent.message, extended))
        fields.append(str(body.count(b"\n")).encode())
    elif ent.maintype.lower() == b"text":
        fields.append(str(body.count(b"\n")).encode())
    if extended:
        fields += [nstring(ent.header(b"content-md5")), _disposition(ent), _language(ent),
                   nstring(ent.header(b"content-location"))]
    return b"(" + b" ".join(fields) + b")"


_EMPTY_PART = b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'


def body_structures(data: bytes, ent: Entity) -> tuple[bytes, bytes]:
    """(BODYSTRUCTURE, BODY) of an entity in one walk of the tree: the same bytes as
    `body_structure(data, ent, True)` and `body_structure(data, ent, False)`, with the shared
    fields (and line counts) computed once — what the structure cache stores per message."""
    if ent.is_multipart:
        if ent.children:
            pairs = [body_structures(data, c) for c in ent.children]
            inner_ext = b"".join(p[0] for p in pairs)
            inner = b"".join(p[1] for p in pairs)
        else:  # a multipart without parts: describe an empty text part (as Dovecot does)
            inner_ext = inner = _EMPTY_PART
        subtype = b" " + string(ent.subtype)
        extended = (b"(" + inner_ext + subtype + b" " + _params(ent.params) + b" "
                    + _disposition(ent) + b" " + _language(ent) + b" "
                    + nstring(ent.header(b"content-location")) + b")")
        return extended, b"(" + inner + subtype + b")"
    body = data[ent.body_start:ent.end]
    encoding = ent.header(b"content-transfer-encoding") or b"7bit"
    fields = [string(ent.maintype), string(ent.subtype), _params(ent.params),
              nstring(ent.header(b"content-id")), nstring(ent.header(b"content-description")),
              string(encoding.strip()), str(len(body)).encode()]
    fields_ext = fields
    if ent.message is not None:
        from mailyard.imap.proto.envelope import envelope

        env = envelope(ent.message.headers)
        sub_ext, sub = body_structures(data, ent.message)
        lines = str(body.count(b"\n")).encode()
        fields_ext = fields + [env, sub_ext, lines]
        fields = fields + [env, sub, lines]
    elif ent.maintype.lower() == b"text":
        fields.append(str(body.count(b"\n")).encode())
    basic = b"(" + b" ".join(fields) + b")"
    extended = (b"(" + b" ".join(fields_ext) + b" " + nstring(ent.header(b"content-md5")) + b" "
                + _disposition(ent) + b" " + _language(ent) + b" "
                + nstring(ent.header(b"content-location")) + b")")
    return extended, basic
