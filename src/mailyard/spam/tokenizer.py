"""Bayes tokens as SpamAssassin's Mail::SpamAssassin::Plugin::Bayes makes them.

Theory of operation: `tokenize(msg)` returns the set of tokens SpamAssassin 4's `tokenize`
would learn from or look up for the same message, from the same four sources
(`bayes_token_sources` default: header, visible, uri; "invisible" text is not tracked by our
HTML renderer and "mimepart" is off by default):

- visible: the Subject, then the rendered text of every text part (both halves of a
  multipart/alternative, as SpamAssassin renders them), one line per paragraph — region 1;
- uri: every link found in the text and the HTML — region 2;
- header: every header but the noise SpamAssassin lists in $IGNORED_HDRS (Subject and Date
  among them), only the two oldest Received headers, plus the metadata pseudo-headers
  (x-spam-relays-*, x-authordomain; not x-senderdomain) — region 0, prefixed `H<name>:` with
  the common names compressed (`*F` From, `*r` Received, `*UA` X-Mailer + User-Agent ...).

Each text is cut into tokens by `_tokenize_line`, line by line, on the UTF-8 octets:
everything but letters, digits, `,@*!_'"$. -` and whole UTF-8 characters becomes a space;
"..." and "--" split words; in body and URIs a Title-cased word at a sentence start is
lower-cased; tokens lose leading/trailing `-'".,`, shorter than 3 octets are dropped;
in body and URIs an address also gives `U*local`, `D*domain`, `D*parent...`, a dotted word
`UD:word` and `UD:` of each parent; over 15 octets a token becomes its 3- and 4-octet UTF-8
characters (`u8:`) or, outside URIs, `sk:` + its first 7 characters; body and URI tokens
are also learned "decomposed" (without punctuation, lower-cased). Header values are
pre-chewed as SpamAssassin does (addresses into `N*name U*local D*domain`, Message-IDs split
at non-word characters, Received trimmed of ids/dates/"with/from/for", IPs to their /24
with an `ip*a.b.c.d` duplicate, Content-Type boundaries masked).

English stopwords (SpamAssassin's 60_bayes_stopwords.cf) are not applied: that file is the
stock ruleset's, and learning must not depend on a rules directory.
"""

from __future__ import annotations

import email.utils
import re

import regex

from mailyard.spam.message import MAX_HEADER_VALUE, ParsedMessage, addresses, decode_rfc2047
from mailyard.spam.relays import relay_path

# Stored in each Bayes database; 1 was mailyard's first, simpler tokenizer.
TOKENIZER_VERSION = 2
MAX_TOKEN_LENGTH = 15
MAX_BODY_TOKENS = 50_000
MAX_URI_TOKENS = 10_000
MAX_HEADER_TOKENS = 10_000
MAX_BODY_LINE = 2048
MAX_BODY_TEXT = 256 * 1024

# $IGNORED_HDRS, as written in Bayes.pm (matched against the whole header name)
_IGNORED = re.compile(r"""(?ix)(?: (?:X-)?Sender
  |Delivered-To |Delivery-Date
  |(?:X-)?Envelope-To
  |X-MIME-Auto[Cc]onverted |X-Converted-To-Plain-Text
  |Subject
  |Date
  |X-List|(?:X-)?Mailing-List
  |(?:X-)?List-(?:Archive|Help|Id|Owner|Post|Subscribe
    |Unsubscribe|Host|Id|Manager|Admin|Comment
    |Name|Url)
  |X-Unsub(?:scribe)?
  |X-Mailman-Version |X-Been[Tt]here |X-Loop
  |Mail-Followup-To
  |X-eGroups-(?:Return|From)
  |X-MDMailing-List
  |X-XEmacs-List
  |X-Sympa-To
  |(?:X-)?Resent-(?:From|To|Date)
  |(?:X-)?Original-(?:From|To|Date)
  |X-MailScanner(?:-SpamCheck)?
  |X-Spam(?:-(?:Status|Level|Flag|Report|Hits|Score|Checker-Version))?
  |X-Antispam |X-RBL-Warning |X-Mailscanner
  |X-MDaemon-Deliver-To |X-Virus-Scanned
  |X-Mass-Check-Id
  |X-Pyzor |X-DCC-\S{2,25}-Metrics
  |X-Filtered-B[Yy] |X-Scanned-By |X-Scanner
  |X-AP-Spam-(?:Score|Status) |X-RIPE-Spam-Status
  |X-SpamCop-[^:]+
  |X-SMTPD |(?:X-)?Spam-Apparently-To
  |SPAM |X-Perlmx-Spam
  |X-Bogosity
  |Content-Class |Thread-(?:Index|Topic)
  |X-Original[Aa]rrival[Tt]ime
  |(?:X-)?Status |X-Flags |X-Keywords |Replied |Forwarded
  |Lines |Content-Length
  |X-UIDL? |X-IMAPbase
  |X-Bugzilla-[^:]+
  |X-VM-(?:Bookmark|(?:POP|IMAP)-Retrieved|Labels|Last-Modified
    |Summary-Format|VHeader|v\d-Data|Message-Order)
  | X-Gnus-Mail-Source
  | Xref
)""")
_PRESENCE_ONLY = re.compile(r"""(?ix)(?: X-Face
  |X-(?:Gnu-?PG|PGP|GPG)(?:-Key)?-Fingerprint
  |D(?:KIM|omainKey)-Signature
  |X-Google-DKIM-Signature
  |ARC-(?:Message-Signature|Seal)
  |Autocrypt
)""")
# %HEADER_NAME_COMPRESSION: exact-case names
_COMPRESS = {
    "Message-Id": "*m", "Message-ID": "*M", "Received": "*r", "User-Agent": "*u",
    "References": "*f", "In-Reply-To": "*i", "From": "*F", "Reply-To": "*R",
    "Return-Path": "*p", "Return-path": "*rp", "X-Mailer": "*x",
    "X-Authentication-Warning": "*a", "Organization": "*o", "Organisation": "*o",
    "Content-Type": "*ct", "Content-Disposition": "*cd", "Content-Transfer-Encoding": "*ce",
    "x-spam-relays-trusted": "*RT", "x-spam-relays-untrusted": "*RU",
}
_MSGID_HDR = re.compile(r"(?i)(?:|X-|Resent-)Message-Id")
_ADDR_HDR = re.compile(r"(?i)(?:|X-|Resent-)(?:Return-Path|From|To|Cc|Reply-To|Errors-To"
                       r"|Mail-Followup-To|Sender)")
_RELAYS_HDR = re.compile(r"x-spam-relays-(?:external|internal|trusted|untrusted)")
_MID_GROUP = re.compile(r"(?i)In-Reply-To|References|Message-ID")
_ADDR_GROUP = re.compile(r"(?i)From|To|Cc")
_UA_GROUP = re.compile(r"(?i)X-Mailer|User-Agent")

# _tokenize_line, on octets
_ASCII_JUNK = re.compile(rb"[^A-Za-z0-9,@*!_'\"$. \-]+")
_KEEP_8BIT = re.compile(rb"([A-Za-z0-9,@*!_'\"$. -]+|[\xC0-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}"
                        rb"|[\xF0-\xF4][\x80-\xBF]{3}|[\xA1-\xFF])|.", re.S)
_DOTS = re.compile(rb"(\w)(\.{3,6})(\w)")
_DASHES = re.compile(rb"(\w)(-{2,6})(\w)")
_TITLE = re.compile(rb"(?:^|\.\s+)([A-Z])([^A-Z]+)(?:\s|$)")
_EDGE = b"-'\".,"
_MAILADDR = re.compile(rb"\S@\S")
_DOTTED = re.compile(rb"(?i)\S\.[a-z]")
_PARENT = re.compile(rb"^[^.]+\.(.+)$", re.S)
_ADDR_SPLIT = re.compile(rb"(.+)@(.+)$", re.S)
_TWO_CONT = re.compile(rb"[\x80-\xBF]{2}")
_UTF8_WIDE = re.compile(rb"(?:[\xE0-\xEF]|[\xF0-\xF4][\x80-\xBF])[\x80-\xBF]{2}")
_SKIP = regex.compile(rb"((?>(?:[\x00-\x7F\xF5-\xFF]|[\xC0-\xDF][\x80-\xBF]|[\xE0-\xEF][\x80-\xBF]{2}"
                      rb"|[\xF0-\xF4][\x80-\xBF]{3}|.){7})).{2,}\Z", regex.S)
_NON_WORD = re.compile(rb"[^\w:*]")
_UPPER = re.compile(rb"[A-Z]")

# header pre-chewing
_OE_MSGID = re.compile(r"<([0-9a-f]{4})[0-9a-f]{4}[0-9a-f]{4}\$([0-9a-f]{4})[0-9a-f]{4}\$"
                       r"([0-9a-f]{8})@(\S+)>")
_EXIM_MSGID = re.compile(r"<[A-Za-z0-9]{7}-[A-Za-z0-9]{6}-0[A-Za-z0-9]@")
_SENDMAIL_MSGID = re.compile(r"<20\d\d[01]\d[0123]\d[012]\d[012345]\d[012345]\d\.[A-F0-9]{10,12}@")
_RCVD_TRIMS = [re.compile(p) for p in (
    r"\swith\sSMTP\sid\sg[\dA-Z]{10,12}\s", r"\swith\sESMTP\sid\s[\dA-F]{10,12}\s",
    r"\bid\s[a-zA-Z0-9]{7,20}\b", r"\bid\s[A-Za-z0-9]{7}-[A-Za-z0-9]{6}-0[A-Za-z0-9]")]
_RCVD_DATE = re.compile(r"""(?x)(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),\s)?
           [0-3\s]?[0-9]\s
           (?:Jan|Feb|Ma[ry]|Apr|Ju[nl]|Aug|Sep|Oct|Nov|Dec)\s
           (?:19|20)?[0-9]{2}\s
           [0-2][0-9](?::[0-5][0-9]){1,2}\s
           (?:\s*\(|\)|\s*(?:[+-][0-9]{4})|\s*(?:UT|[A-Z]{2,3}T))*""")
_RCVD_IP = re.compile(r"\b(\d{1,3}\.)(\d{1,3}\.)(\d{1,3})(\.\d{1,3})\b")
_RCVD_NOISE = re.compile(r"\b(?:with|from|for|SMTP|ESMTP)\b")
_BOUNDARY = re.compile(r"""(?i)boundary=["'](.*?)["']""")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _mail_addr_tokens(addr: bytes) -> list[bytes]:
    m = _ADDR_SPLIT.match(addr)
    if not m:
        return []
    domain = m.group(2)
    out = [b"U*" + m.group(1), b"D*" + domain]
    while (p := _PARENT.match(domain)) is not None:
        domain = p.group(1)
        out.append(b"D*" + domain)
    return out


def _tokenize_line(line: bytes, prefix: bytes, region: int, out: list[bytes]) -> None:
    """Bayes.pm's _tokenize_line: region 0 header, 1 body, 2 URI."""
    if line.isascii():
        line = _ASCII_JUNK.sub(b" ", line)
    else:
        line = _KEEP_8BIT.sub(lambda m: m.group(1) if m.group(1) is not None else b" ", line)
    line = _DASHES.sub(rb"\1 \2 \3", _DOTS.sub(rb"\1 \2 \3", line))
    body = region != 0
    if body:
        line = _TITLE.sub(lambda m: b" " + m.group(1).lower() + m.group(2) + b" ", line)
    for token in line.split():
        token = token.lstrip(_EDGE).rstrip(_EDGE)
        if len(token) < 3:
            continue
        if body:
            if _MAILADDR.search(token):
                out.extend(_mail_addr_tokens(token))
            elif _DOTTED.search(token):
                out.append(b"UD:" + token)
                bit = token
                while (p := _PARENT.match(bit)) is not None:
                    bit = p.group(1)
                    out.append(b"UD:" + bit)
        if len(token) > MAX_TOKEN_LENGTH and b"*" not in token:
            if _TWO_CONT.search(token):
                wide = _UTF8_WIDE.findall(token)
                if wide:
                    out.extend(prefix + b"u8:" + c for c in wide)
                    continue
            if region != 2:
                m = _SKIP.match(token)
                if m:
                    token = b"sk:" + m.group(1)
        if body:
            punct = _NON_WORD.search(token) is not None
            if punct:
                out.append(prefix + _NON_WORD.sub(b"", token))
            if _UPPER.search(token):
                lower = token.lower()
                out.append(prefix + lower)
                if punct:
                    out.append(prefix + _NON_WORD.sub(b"", lower))
        out.append(prefix + token)


def _chew_message_id(val: str) -> str:
    val = _OE_MSGID.sub(r" OEA\1 OEB\2 OEC\3 \4 ", val)
    val = _EXIM_MSGID.sub("", val, count=1)
    val = _SENDMAIL_MSGID.sub("", val)
    return re.sub(r"[^_A-Za-z0-9]", " ", val)


def _chew_received(val: str) -> str:
    for trim in _RCVD_TRIMS:
        val = trim.sub(" ", val)
    val = _RCVD_DATE.sub("", val)

    def ip(m: re.Match) -> str:
        a, b, c, d = m.groups()
        if b == "10" or (b == "192" and c == "168"):   # as written in Bayes.pm
            return f"{a}{b}{c}{d} ip*{a}{b}{c}{d} "
        return f"{a}{b}{c} ip*{a}{b}{c}{d} "

    val = _RCVD_IP.sub(ip, val)
    return _RCVD_NOISE.sub(" ", val)


def _chew_addresses(val: str) -> str:
    toks: list[str] = []
    for phrase, addr in email.utils.getaddresses([val]):
        toks.extend("N*" + word for word in phrase.split())
        if addr:
            toks.extend(t.decode("utf-8", "surrogateescape")
                        for t in _mail_addr_tokens(_utf8(addr)))
    return " ".join(toks)


def _chew_content_type(val: str) -> str:
    m = _BOUNDARY.search(val)
    if m:
        val = _BOUNDARY.sub(" ", val)
        boundary = re.sub(r"[a-fA-F0-9]", "H", m.group(1))
        val += re.sub(r"([-_.=]+)", r" \1 ", boundary)
    return re.sub(r"\b(?:text|charset)\b", " ", val)


def _metadata(msg: ParsedMessage) -> list[tuple[str, str]]:
    """The pseudo-headers SpamAssassin's metadata adds (Message::get_all_metadata, sorted)."""
    path = relay_path(msg.header("Received"))
    out = [(f"x-spam-relays-{which.lower()}", path.pseudo_header(which))
           for which in ("External", "Internal", "Trusted", "Untrusted")]
    froms = []
    for value in msg.header("From"):
        for addr in addresses(value):
            host = addr.rpartition("@")[2].lower()
            if host and host not in froms:
                froms.append(host)
    if froms:
        out.append(("x-authordomain", " ".join(froms)))
    return sorted(out)


def _header_texts(msg: ParsedMessage) -> dict[str, str]:
    """Bayes.pm's _tokenize_headers: prefix → the pre-chewed values joined by spaces."""
    received: list[tuple[str, str]] = []
    chosen: list[tuple[str, str]] = []
    for name, raw in msg.headers:
        value = decode_rfc2047(raw.replace("\n", "").strip())[:MAX_HEADER_VALUE]
        if name.lower() == "received":
            received.append((name, value))
        elif not _IGNORED.fullmatch(name):
            chosen.append((name, value))
    chosen += _metadata(msg)
    chosen += received[::-1][:2]
    parsed: dict[str, str] = {}

    def put(key: str, val: str) -> None:
        parsed[key] = parsed[key] + " " + val if key in parsed else val

    for name, val in chosen:
        if not val.strip():
            continue
        if _MSGID_HDR.fullmatch(name):
            val = _chew_message_id(val)
        elif _ADDR_HDR.fullmatch(name):
            val = _chew_addresses(val)
        elif name == "Received":
            val = _chew_received(val)
        elif name == "Content-Type":
            val = _chew_content_type(val)
        elif name == "MIME-Version":
            val = val.replace("1.0", "", 1)
        elif _PRESENCE_ONLY.fullmatch(name):
            val = "1"
        elif _RELAYS_HDR.fullmatch(name):
            val = re.sub(r" [a-z]+=", " ", val)
        if _MID_GROUP.fullmatch(name):
            put("*MI", val)
        if _ADDR_GROUP.fullmatch(name):
            put("*Ad", val)
        if _UA_GROUP.fullmatch(name):
            put("*UA", val)
        put(_COMPRESS.get(name, name), val)
    return parsed


def _body_lines(msg: ParsedMessage) -> list[str]:
    """Message::get_body_text_array_common('visible_rendered'): the Subject, then every text
    part's rendering, blank-line-separated paragraphs as lines, white space collapsed."""
    text = "\n".join(msg.plain_texts + msg.html_texts)[:MAX_BODY_TEXT]
    text = re.sub(r"\n+\s*\n+", "\x00", text)
    text = re.sub(r"\s+", " ", text).replace("\x00", "\n")
    lines = []
    for line in (msg.subject + "\n" + text).split("\n"):
        while len(line) > MAX_BODY_LINE:
            cut = line.rfind(" ", 0, MAX_BODY_LINE) + 1 or MAX_BODY_LINE
            lines.append(line[:cut])
            line = line[cut:]
        lines.append(line)
    return lines


def tokenize(msg: ParsedMessage) -> set[str]:
    """The Bayes tokens of a message (a set: each counts once)."""
    body: list[bytes] = []
    for line in _body_lines(msg):
        _tokenize_line(_utf8(line), b"", 1, body)
        if len(body) >= MAX_BODY_TOKENS:
            break
    uris: list[bytes] = []
    for uri in msg.uris:
        _tokenize_line(_utf8(uri), b"", 2, uris)
        if len(uris) >= MAX_URI_TOKENS:
            break
    headers: list[bytes] = []
    for prefix, value in _header_texts(msg).items():
        _tokenize_line(_utf8(value), b"H" + _utf8(prefix) + b":", 0, headers)
        if len(headers) >= MAX_HEADER_TOKENS:
            break
    return {t.decode("utf-8", "surrogateescape") for t in (*body, *uris, *headers) if t}
