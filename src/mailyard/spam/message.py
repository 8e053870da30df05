"""Parse a message once into everything the rules and the Bayes tokenizer look at.

Theory of operation: `ParsedMessage.parse(raw)` normalises line endings, splits the header
section (unfolded, RFC 2047-decoded on demand), then walks the MIME tree iteratively with a
stack (never recursion), bounded in depth, number of parts and bytes. Text parts are decoded
(transfer encoding, then charset, with a fallback that never raises); HTML parts are rendered
to text by `mailyard.spam.html`. The results are what SpamAssassin rule types see:

- `header(name)` for `header` rules, `body_text` (Subject first, then the rendered text as
  paragraphs) for `body`, `rawbody_text` (decoded, not rendered) for `rawbody`, `full_text`
  (the whole message) for `full`, `uris` for `uri`, `parts` for `mimeheader` and the MIME evals.

Hostile input is bounded here, once, by the caps below: a 50 MB message or a 1 MB header line
costs no more than the caps allow, and every later regex runs over capped text.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from dataclasses import dataclass, field
from functools import cached_property

from mailyard.spam.html import HtmlInfo, render_html

MAX_MESSAGE_BYTES = 1 << 20        # bytes of the message we parse at all
MAX_HEADER_BYTES = 256 * 1024      # bytes of the header section
MAX_HEADER_VALUE = 8192            # characters of one header value that rules see
MAX_HEADERS = 1000
MAX_PARTS = 200
MAX_DEPTH = 20
MAX_TEXT = 256 * 1024              # characters of body text the rules scan
MAX_URIS = 500

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,40})\?([bBqQ])\?([^?\s]*)\?=")
_ENCODED_GAP = re.compile(r"(\?=)\s+(=\?)")
_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
_URI_TEXT = re.compile(
    r"""(?i)\b(?:(?:https?|ftp)://[^\s<>"'`]{1,2000}|www\.[a-z0-9-]+(?:\.[a-z0-9-]+)+[^\s<>"'`]{0,2000}"""
    r"""|mailto:[^\s<>"'`]{1,300})""")
# A bare address in the text, as SpamAssassin's text URI parser (_tbirdurire's mail
# alternative) takes it: up to 251 characters either side of an @ that are not delimiters
# (nor non-ASCII; nor a second @ on the left). Found from each @ outwards rather than by one
# regex from every word boundary, which costs a second on 250 KB of "a.a.a.".
_TEXT_ADDR_LOCAL = re.compile(r"""[^\s<>"'`}\]{\[|\x1b\xa0,(@\x80-\U0010ffff]{1,251}\Z""")
_TEXT_ADDR_DOMAIN = re.compile(r"""[^\s<>"'`}\]{\[|\x1b\xa0,(\x80-\U0010ffff]{1,251}""")
# MIMEEval's MIME_QP_LONG_LINE: an encoded line longer than RFC 5322's 78 characters (not
# RFC 2045's 76: Apple Mail and OWA write 78), lines starting "SPAM: " excepted.
_QP_LONG_LINE = re.compile(rb"(?m)^(?!SPAM: )[^\n]{79}")
_TEXT_ADDR_TRAIL = re.compile(r"[-~!@#^&*()_+=:;'?,.]*$")
_TEXT_ADDR_LEAD = re.compile(r"(?i)^(?:skype|e?-?mail)?:+")
_ADDR = re.compile(r"<([^<>]*)>")
_ADDR_BARE = re.compile(r"[^\s<>()\",;:]+@[^\s<>()\",;:]+")


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode text in a declared charset; bad or unknown charsets never raise."""
    name = (charset or "").strip().strip('"').lower()
    if name:
        try:
            codecs.lookup(name)
            return data.decode(name, errors="replace")
        except (LookupError, ValueError, TypeError, UnicodeError, SystemError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded words (RFC 2047 §6.2: adjacent words join without space)."""
    if "=?" not in value:
        return value
    value = _ENCODED_GAP.sub(r"\1\2", value)

    def word(m: re.Match) -> str:
        charset, enc, text = m.group(1).split("*")[0], m.group(2).upper(), m.group(3)
        try:
            if enc == "B":
                data = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
            else:
                data = binascii.a2b_qp(text.replace("_", " ").encode("latin-1", "replace"))
        except (binascii.Error, ValueError):
            return m.group(0)
        return decode_bytes(data, charset)

    return _ENCODED_WORD.sub(word, value)


def parse_params(value: str) -> tuple[str, dict[str, str]]:
    """`type/subtype; a=b` → ("type/subtype", {"a": "b"}) (RFC 2045 §5.1, RFC 2231 lite)."""
    main, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for m in _PARAM.finditer(";" + rest):
        key, val = m.group(1).lower(), m.group(2)
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        if key.endswith("*") or re.search(r"\*\d+\*?$", key):
            base = re.sub(r"\*(\d+)?\*?$", "", key)
            if "''" in val:
                val = val.split("''", 1)[1]
            val = re.sub(r"%([0-9A-Fa-f]{2})", lambda h: chr(int(h.group(1), 16)), val)
            params[base] = params.get(base, "") + val
        else:
            params.setdefault(key, val)
    return main.strip().lower(), params


def split_header_section(data: bytes) -> tuple[list[tuple[str, str]], bytes, bool]:
    """Split `data` (LF line endings) into raw headers and body; flag a missing separator."""
    end = data.find(b"\n\n")
    if data.startswith(b"\n"):
        head, body = b"", data[1:]
    elif end == -1:
        head, body = data, b""
    else:
        head, body = data[:end], data[end + 2:]
    malformed = False
    if len(head) > MAX_HEADER_BYTES:
        head = head[:MAX_HEADER_BYTES]
        malformed = True
    headers: list[tuple[str, str]] = []
    text = head.decode("utf-8", errors="surrogateescape")
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            if len(value) < MAX_HEADER_VALUE * 2:
                headers[-1] = (name, value + "\n" + line)
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or " " in name.strip() or len(name) > 200:
            if line.startswith("From "):
                continue  # an mbox separator line
            malformed = True
            continue
        if len(headers) < MAX_HEADERS:
            headers.append((name.strip(), value))
    return headers, body, malformed


def _clean_header(value: str) -> str:
    value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.strip()[:MAX_HEADER_VALUE]


def _raw_value(value: str) -> str:
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")[:MAX_HEADER_VALUE]


@dataclass
class Part:
    """One leaf MIME part."""

    content_type: str
    params: dict[str, str]
    headers: list[tuple[str, str]]
    encoding: str
    disposition: str
    filename: str
    raw_size: int
    payload: bytes = b""
    text: str | None = None          # decoded text for text/* parts
    qp_long_line: bool = False       # quoted-printable with an encoded line over 78 characters

    def header(self, name: str) -> list[str]:
        name = name.lower()
        return [_clean_header(v) for n, v in self.headers if n.lower() == name]


@dataclass
class ParsedMessage:
    """A message, parsed once, as the rule engine and the Bayes tokenizer see it."""

    raw: bytes
    headers: list[tuple[str, str]]
    parts: list[Part]
    flags: set[str] = field(default_factory=set)
    html: HtmlInfo = field(default_factory=HtmlInfo)
    plain_texts: list[str] = field(default_factory=list)
    html_texts: list[str] = field(default_factory=list)
    truncated: bool = False
    size: int = 0

    # -- parsing ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, message: bytes) -> ParsedMessage:
        size = len(message)
        data = message[:MAX_MESSAGE_BYTES]
        data = data.replace(b"\r\n", b"\n")
        headers, body, malformed = split_header_section(data)
        msg = cls(raw=data, headers=headers, parts=[], size=size,
                  truncated=size > MAX_MESSAGE_BYTES)
        if malformed:
            msg.flags.add("malformed_headers")
        msg._walk(headers, body)
        return msg

    def _walk(self, top_headers: list[tuple[str, str]], top_body: bytes) -> None:
        stack: list[tuple[list[tuple[str, str]], bytes, int, str]] = [
            (top_headers, top_body, 0, "text/plain")]
        text_budget = MAX_TEXT
        while stack:
            headers, body, depth, default_type = stack.pop()
            hmap = {}
            for n, v in headers:
                hmap.setdefault(n.lower(), v)
            ctype, params = parse_params(_clean_header(hmap.get("content-type", default_type)))
            if "/" not in ctype:
                ctype = "text/plain" if not hmap.get("content-type") else "application/octet-stream"
                if hmap.get("content-type"):
                    self.flags.add("bad_content_type")
            if ctype.startswith("multipart/"):
                boundary = params.get("boundary", "")
                if depth >= MAX_DEPTH:
                    self.flags.add("mime_too_deep")
                    continue
                if not boundary:
                    self.flags.add("missing_boundary")
                    ctype = "text/plain"
                else:
                    children = _split_multipart(body, boundary.encode("utf-8", "replace"))
                    if children is None:
                        self.flags.add("missing_mime_end")
                        children = []
                    sub_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
                    for child in reversed(children):
                        if len(self.parts) + len(stack) >= MAX_PARTS:
                            self.flags.add("too_many_parts")
                            break
                        ch, cb, _ = split_header_section(child)
                        stack.append((ch, cb, depth + 1, sub_default))
                    continue
            if ctype == "message/rfc822" and depth < MAX_DEPTH and len(self.parts) < MAX_PARTS:
                inner_h, inner_b, _ = split_header_section(body)
                self.parts.append(Part(ctype, params, headers, "", "", "", len(body)))
                stack.append((inner_h, inner_b, depth + 1, "text/plain"))
                continue
            encoding = _clean_header(hmap.get("content-transfer-encoding", "")).lower()
            disp, dparams = parse_params(_clean_header(hmap.get("content-disposition", "")))
            filename = decode_rfc2047(dparams.get("filename") or params.get("name") or "")
            part = Part(ctype, params, headers, encoding, disp, filename, len(body))
            if encoding == "quoted-printable":
                part.qp_long_line = _QP_LONG_LINE.search(body) is not None
            if len(self.parts) >= MAX_PARTS:
                self.flags.add("too_many_parts")
                continue
            self.parts.append(part)
            is_text = ctype.startswith("text/") and disp != "attachment"
            if is_text and text_budget > 0:
                payload = _decode_transfer(body[: text_budget * 4], encoding)
                part.payload = payload
                text = decode_bytes(payload, params.get("charset"))[:text_budget]
                part.text = text
                text_budget -= len(text)
                if ctype == "text/html":
                    rendered = render_html(text, self.html)
                    self.html_texts.append(rendered)
                else:
                    self.plain_texts.append(text)
            else:
                # binary parts: keep a bounded prefix for magic-number and size checks
                part.payload = _decode_transfer(body[:65536], encoding)

    # -- what rules see --------------------------------------------------------------------
    def header(self, name: str, raw: bool = False) -> list[str]:
        """Every value of header `name` (unfolded, RFC 2047-decoded unless raw)."""
        lname = name.lower()
        out = []
        for n, v in self.headers:
            if n.lower() == lname:
                v = _clean_header(v.replace("\n", "") if not raw else v)
                out.append(v if raw else decode_rfc2047(v))
        return out

    def has_header(self, name: str) -> bool:
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self.headers)

    @cached_property
    def all_headers_text(self) -> str:
        return "".join(f"{n}: {decode_rfc2047(_clean_header(v.replace(chr(10), '')))}\n"
                       for n, v in self.headers)

    @cached_property
    def all_headers_raw(self) -> str:
        return "".join(f"{n}:{_raw_value(v)}\n" for n, v in self.headers)

    @cached_property
    def subject(self) -> str:
        vals = self.header("Subject")
        return vals[0] if vals else ""

    @cached_property
    def visible_text(self) -> str:
        """Rendered body text: plain parts, and HTML parts rendered (no Subject)."""
        if self.plain_texts and self.html_texts and self._is_alternative():
            texts = self.plain_texts
        else:
            texts = self.plain_texts + self.html_texts
        return "\n".join(texts)[:MAX_TEXT]

    def _is_alternative(self) -> bool:
        for n, v in self.headers:
            if n.lower() == "content-type" and "multipart/alternative" in v.lower():
                return True
        return any(p.content_type == "multipart/alternative" for p in self.parts)

    @cached_property
    def body_text(self) -> str:
        """What `body` rules match: the Subject, then the text as paragraphs (one per line)."""
        paras = re.split(r"\n[ \t\xa0]*\n+", self.visible_text)
        lines = [self.subject] + [re.sub(r"[ \t\xa0]*\n[ \t\xa0]*", " ", p).strip()
                                  for p in paras]
        return "\n".join(l for l in lines if l) + "\n"

    @cached_property
    def rawbody_text(self) -> str:
        texts = [p.text for p in self.parts if p.text is not None]
        return "\n".join(texts)[:MAX_TEXT]

    @cached_property
    def full_text(self) -> str:
        return self.raw[: MAX_TEXT * 2].decode("utf-8", errors="replace")

    @cached_property
    def uris(self) -> list[str]:
        found: list[str] = []
        seen = set()
        for uri in self.html.links + _text_uris("\n".join(self.plain_texts)[:MAX_TEXT]):
            uri = uri.strip().rstrip(".,;:!?)]}'\"")
            if not uri:
                continue
            if uri.lower().startswith("www."):
                uri = "http://" + uri
            if uri not in seen:
                seen.add(uri)
                found.append(uri)
                if len(found) >= MAX_URIS:
                    break
        return found

    @cached_property
    def uri_hosts(self) -> list[str]:
        hosts = []
        for uri in self.uris:
            m = re.match(r"(?i)^[a-z][a-z0-9+.-]*://(?:[^/@?#]*@)?(\[[^\]]*\]|[^/:?#]*)", uri)
            if m:
                host = m.group(1).lower().strip(".")
                if host and host not in hosts:
                    hosts.append(host)
        return hosts


def _text_uris(text: str) -> list[str]:
    """Links written out in the text: scheme and www. URLs, then bare addresses as mailto:
    (an @ inside a URL belongs to the URL), in the order they appear."""
    found: list[tuple[int, str]] = []
    spans: list[tuple[int, int]] = []
    for m in _URI_TEXT.finditer(text):
        found.append((m.start(), m.group(0)))
        spans.append(m.span())
    end = -1
    at = text.find("@")
    while at != -1:
        if at >= end and not any(a <= at < b for a, b in spans):
            local = _TEXT_ADDR_LOCAL.search(text, max(0, at - 251), at)
            domain = _TEXT_ADDR_DOMAIN.match(text, at + 1)
            if local and domain:
                end = domain.end()
                uri = _text_address_uri(text[local.start():end])
                if uri is not None:
                    found.append((local.start(), uri))
        at = text.find("@", at + 1)
    found.sort(key=lambda item: item[0])
    return [uri for _, uri in found]


def _text_address_uri(found: str) -> str | None:
    """A bare address found in the text → `mailto:` URI, as SpamAssassin's
    PerMsgStatus::_process_text_uri_list makes one (MUAs linkify these): trailing punctuation
    trimmed, a dot needed after the @, "/" before the @ means it was not an address."""
    if "(" not in found and ")" in found:
        found = found[:found.index(")")]
    found = _TEXT_ADDR_TRAIL.sub("", found)
    if not re.search(r"@.+?\.", found) or re.search(r"/.+@", found) or "&nbsp;" in found:
        return None
    return "mailto:" + _TEXT_ADDR_LEAD.sub("", found)


def addresses(value: str) -> list[str]:
    """The addr-specs in an address header (good enough for rules: <...> or bare a@b)."""
    found = _ADDR.findall(value)
    if not found:
        found = _ADDR_BARE.findall(value)
    return [a.strip() for a in found]


def display_name(value: str) -> str:
    if "<" in value:
        return value.split("<", 1)[0].strip().strip('"').strip()
    m = re.search(r"\(([^)]*)\)", value)
    return m.group(1).strip() if m else ""


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes] | None:
    """Split a multipart body on `--boundary` lines (RFC 2046 §5.1.1); None if no end."""
    delim = b"--" + boundary
    parts: list[bytes] = []
    pos = 0
    start = None
    closed = False
    while True:
        idx = body.find(delim, pos)
        if idx == -1:
            break
        if idx != 0 and body[idx - 1:idx] != b"\n":
            pos = idx + len(delim)
            continue
        after = idx + len(delim)
        if start is not None:
            parts.append(body[start:max(start, idx - 1)])
            if len(parts) > MAX_PARTS:
                break
        if body[after:after + 2] == b"--":
            closed = True
            break
        nl = body.find(b"\n", after)
        if nl == -1:
            start = None
            break
        start = nl + 1
        pos = start
    if start is not None and not closed:
        parts.append(body[start:])
    if not parts and not closed:
        return None
    return parts if closed or parts else None


_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")


def _decode_transfer(body: bytes, encoding: str) -> bytes:
    if encoding == "base64":
        clean = _B64_JUNK.sub(b"", body)
        clean = clean[: len(clean) - len(clean) % 4]
        try:
            return binascii.a2b_base64(clean)
        except (binascii.Error, ValueError):
            return b""
    if encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(body)
        except (binascii.Error, ValueError):
            return body
    return body
