"""The `eval:` functions rules may call — a documented subset of SpamAssassin's.

Each function takes the scan context (`ctx.msg` the ParsedMessage, `ctx.facts` the MTA's
results, `ctx.bayes_probability`) and the rule's arguments, and returns a hit count (0 = no
hit; True counts as 1). A rule naming a function not listed in `EVALS` is skipped at load time
with "unsupported eval: NAME".

Supported, by family:
- Bayes: check_bayes(min, max).
- MTA facts (`facts`): check_for_spf_{pass,fail,softfail,neutral,none,permerror,temperror},
  check_for_spf_helo_* (from facts["spf_helo"]), check_dkim_{valid,signed,valid_author_sig},
  check_dmarc_{pass,reject,quarantine,none,missing}, check_arc_{valid,signed}.
- DNS (answers the filter looked up and passed in facts["dns"]): check_rbl(set, zone
  [, subtest]), check_rbl_sub(set, subtest), check_rbl_txt(set, zone [, subtest]),
  check_uridnsbl(rule).
- Headers: check_for_shifted_date(min, max) (hours between Date: and the first Received:),
  check_illegal_chars(header, ratio, count), check_header_count_range(header, min, max),
  check_for_missing_to_header, subject_is_all_caps, check_msg_parse_flags(flag),
  check_from_in_list / check_to_in_list / welcomelist family (always 0: no lists configured).
- Relays: check_all_trusted (facts["all_trusted"]), check_no_relays (no Received:).
- FreeMail (domains from `freemail_domains`): check_freemail_from([regex]),
  check_freemail_header(header[, regex]), check_freemail_replyto('replyto'|'reply').
- check_for_matching_env_and_hdr_from, check_for_to_in_subject('user'|'address'),
  short_url() (link hosts listed by `url_shortener`).
- MIME and HTML: check_for_mime(test) (mime_base64_count, mime_qp_count, mime_attachment,
  mime_base64_encoded_text, mime_qp_long_line, mime_bad_iso_charset, mimepart_limit_exceeded,
  mime_base64_no_name), check_for_mime_html, check_for_mime_html_only, html_test(test)
  (html, embeds, form_action_mailto), html_image_only(min, max), html_image_ratio(min, max),
  html_tag_exists(tag), image_count(type, min[, max]), check_body_length(max),
  check_for_uppercase(min, max), check_ma_non_text, check_microsoft_executable,
  mailyard_risky_attachment (ours), check_https_ip_mismatch.
- More families in their own modules: mailyard.spam.evals_headers (relay path, forged
  Received, From/envelope domains, recipients, Outlook Message-ID, VBounce) and
  mailyard.spam.evals_html (font contrast/size/face, tag balance, title/comment/anchor text).
"""

from __future__ import annotations

import email.utils
import fnmatch
import ipaddress
import re
from collections.abc import Callable

from mailyard.spam.message import addresses

EVALS: dict[str, Callable] = {}


def _eval(*names: str):
    def register(fn: Callable) -> Callable:
        for name in names or (fn.__name__,):
            EVALS[name] = fn
        return fn
    return register


def _num(v, default=0.0) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


# -- Bayes --------------------------------------------------------------------------------
@_eval()
def check_bayes(ctx, low, high="1.0"):
    p = ctx.bayes_probability
    return p is not None and _num(low) <= p < _num(high, 1.0) + (1e-9 if _num(high) >= 1 else 0)


# -- MTA facts ----------------------------------------------------------------------------
def _fact(ctx, key: str) -> str:
    return str(ctx.facts.get(key, "") or "").lower()


def _spf(result: str, key: str = "spf"):
    return lambda ctx: _fact(ctx, key) == result


for _r in ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"):
    EVALS[f"check_for_spf_{_r}"] = _spf(_r)
    EVALS[f"check_for_spf_helo_{_r}"] = _spf(_r, "spf_helo")


@_eval("check_dkim_valid", "check_dkim_valid_author_sig", "check_dkim_dependable")
def check_dkim_valid(ctx, *domains):
    return _fact(ctx, "dkim") in ("valid", "pass")


@_eval("check_dkim_signed")
def check_dkim_signed(ctx, *domains):
    return _fact(ctx, "dkim") in ("valid", "pass", "invalid", "fail") or \
        ctx.msg.has_header("DKIM-Signature")


def _dmarc(result: str):
    return lambda ctx: _fact(ctx, "dmarc") == result


for _r in ("pass", "reject", "quarantine", "none", "fail"):
    EVALS[f"check_dmarc_{_r}"] = _dmarc(_r)
for _r in ("reject", "quarantine", "none"):
    EVALS[f"check_dmarc_{_r}"] = (lambda r: lambda ctx: _fact(ctx, "dmarc") == r or (
        _fact(ctx, "dmarc") == "fail" and _fact(ctx, "dmarc_policy") == r))(_r)
EVALS["check_dmarc_missing"] = lambda ctx: _fact(ctx, "dmarc") in ("missing", "")
EVALS["check_arc_valid"] = lambda ctx: _fact(ctx, "arc") == "pass"
EVALS["check_arc_signed"] = lambda ctx: ctx.msg.has_header("ARC-Seal")


# -- DNS lookups, done by the caller and passed in facts["dns"] ----------------------------
def _dns(ctx) -> dict:
    dns = ctx.facts.get("dns")
    return dns if isinstance(dns, dict) else {}


def _subtest_match(answers: list[str], subtest: str) -> bool:
    if not subtest:
        return bool(answers)
    for a in answers:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", subtest):
            if a == subtest:
                return True
        elif re.fullmatch(r"\d+", subtest):
            try:
                if int(ipaddress.IPv4Address(a)) & int(subtest):
                    return True
            except ValueError:
                pass
        else:
            try:
                if re.search(subtest, a):
                    return True
            except re.error:
                return False
    return False


def rbl_queries(ctx_or_ips, zone: str) -> list[str]:
    ips = ctx_or_ips if isinstance(ctx_or_ips, list) else []
    out = []
    for ip in ips:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            continue
        if addr.version == 4:
            out.append(".".join(reversed(ip.split("."))) + "." + zone.rstrip(".") + ".")
        else:
            nibbles = addr.exploded.replace(":", "")
            out.append(".".join(reversed(nibbles)) + "." + zone.rstrip(".") + ".")
    return out


def _rbl_answers(ctx, zone: str, rdtype: str = "A") -> list[str]:
    answers: list[str] = []
    for qname in rbl_queries(ctx.client_ips, zone):
        answers += _dns(ctx).get(f"{qname}/{rdtype}", [])
    return answers


@_eval()
def check_rbl(ctx, rbl_set, zone, subtest=""):
    answers = _rbl_answers(ctx, zone)
    ctx.rbl_answers[rbl_set] = answers
    return _subtest_match(answers, str(subtest))


@_eval()
def check_rbl_txt(ctx, rbl_set, zone, subtest=""):
    answers: list[str] = []
    for qname in rbl_queries(ctx.client_ips, zone):
        answers += _dns(ctx).get(f"{qname}/TXT", [])
    return _subtest_match(answers, str(subtest))


@_eval()
def check_rbl_sub(ctx, rbl_set, subtest):
    answers = ctx.rbl_answers.get(rbl_set)
    if answers is None:
        zone = ctx.rbl_zones.get(rbl_set)
        answers = ctx.rbl_answers[rbl_set] = _rbl_answers(ctx, zone) if zone else []
    return _subtest_match(answers, str(subtest))


@_eval()
def check_uridnsbl(ctx, rule_name):
    spec = ctx.ruleset.uridnsbl.get(rule_name)
    if spec is None:
        return False
    zone, rdtype, sub = spec
    for host in ctx.msg.uri_hosts:
        qname = uribl_qname(host, zone)
        if qname and _subtest_match(_dns(ctx).get(f"{qname}/{rdtype}", []), sub):
            return True
    return False


def uribl_qname(host: str, zone: str) -> str | None:
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return None  # domain blocklists list names, not addresses
    except ValueError:
        pass
    labels = host.split(".")
    if len(labels) < 2:
        return None
    # registered domain, approximately: the last two labels (three for 2-letter ccTLD SLDs)
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:]) + "." + zone.rstrip(".") + "."


def lookups_for(fname: str, args: tuple, rule_name: str, uridnsbl: dict) -> tuple:
    """What DNS a rule needs: ("rbl", zone, rdtype) or ("uribl", zone, rdtype)."""
    if fname == "check_rbl" and len(args) >= 2:
        return (("rbl", str(args[1]), "A"),)
    if fname == "check_rbl_txt" and len(args) >= 2:
        return (("rbl", str(args[1]), "TXT"),)
    if fname == "check_uridnsbl" and args:
        spec = uridnsbl.get(str(args[0]))
        if spec:
            return (("uribl", spec[0], spec[1]),)
    return ()


# -- headers ------------------------------------------------------------------------------
@_eval()
def check_for_shifted_date(ctx, low="undef", high="undef"):
    diff = ctx.date_received_diff_hours
    if diff is None:
        return False
    lo = -1e9 if str(low) == "undef" else _num(low)
    hi = 1e9 if str(high) == "undef" else _num(high)
    return lo <= diff < hi


def date_shift_hours(dates: list[str], received: list[str], boundary: int | None) -> float | None:
    """Hours from the Received dates to Date:, the smallest shift against three reference
    points: the Received header recording the hop into our side (`boundary`), the one that
    hop's own server wrote, and the oldest dated Received (the sender's clock may be wrong
    or the message queued anywhere in between; only a shift from all of them counts)."""
    if not dates or not received:
        return None
    sent = received_time(";" + dates[0])
    if sent is None:
        return None
    refs = [boundary, boundary + 1] if boundary is not None else [0]
    times = [received_time(received[i]) for i in refs if i < len(received)]
    for value in reversed(received):
        oldest = received_time(value)
        if oldest is not None:
            times.append(oldest)
            break
    diffs = [(sent - t).total_seconds() / 3600.0 for t in times if t is not None]
    return min(diffs, key=abs) if diffs else None


def received_time(value: str):
    _, _, date = value.rpartition(";")
    try:
        parsed = email.utils.parsedate_to_datetime(date.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else None


@_eval()
def check_illegal_chars(ctx, header, ratio, count):
    text = ctx.msg.all_headers_raw if header == "ALL" else "".join(
        ctx.msg.header(header, raw=True))
    if not text:
        return False
    bad = sum(1 for c in text if ord(c) > 127 or (ord(c) < 32 and c not in "\t\n\r"))
    return bad >= _num(count) and bad / len(text) > _num(ratio)


@_eval()
def check_header_count_range(ctx, header, low, high):
    n = len(ctx.msg.header(header, raw=True))
    return _num(low) <= n <= _num(high)


@_eval()
def check_for_missing_to_header(ctx):
    return not ctx.msg.has_header("To") and not ctx.msg.has_header("Apparently-To")


@_eval()
def subject_is_all_caps(ctx):
    subject = ctx.msg.subject
    letters = [c for c in subject if c.isalpha()]
    words = subject.split()
    return len(words) >= 2 and len(letters) >= 10 and all(c.isupper() for c in letters)


_PARSE_FLAGS = {"missing_head_body_separator": "malformed_headers",
                "truncated_header": "malformed_headers",
                "missing_mime_head_body_separator": "missing_mime_end",
                "mime_too_deep": "mime_too_deep"}


@_eval()
def check_msg_parse_flags(ctx, *flags):
    return any(_PARSE_FLAGS.get(f, f) in ctx.msg.flags for f in flags)


@_eval("check_from_in_list", "check_to_in_list", "check_replyto_in_list",
       "check_from_in_welcomelist", "check_from_in_whitelist", "check_from_in_blocklist",
       "check_from_in_blacklist", "check_to_in_welcomelist", "check_to_in_whitelist",
       "check_to_in_blocklist", "check_to_in_blacklist", "check_to_in_more_spam",
       "check_to_in_all_spam", "check_from_in_default_welcomelist",
       "check_from_in_default_whitelist", "check_forged_in_welcomelist",
       "check_forged_in_whitelist", "check_forged_in_default_welcomelist",
       "check_forged_in_default_whitelist",
       "check_uri_host_listed", "check_uri_host_in_welcomelist", "check_uri_host_in_whitelist",
       "check_uri_host_in_blocklist", "check_uri_host_in_blacklist",
       "check_subject_in_welcomelist", "check_subject_in_whitelist",
       "check_subject_in_blocklist", "check_subject_in_blacklist")
def no_list_configured(ctx, *args):
    """Welcome/block lists: mailyard keeps none in rules, so these never hit."""
    return False


# -- MIME and HTML ------------------------------------------------------------------------
def _text_parts(ctx):
    return [p for p in ctx.msg.parts if p.content_type.startswith("text/")]


@_eval()
def check_for_mime(ctx, test):
    parts = ctx.msg.parts
    if test == "mime_base64_count":
        return sum(1 for p in parts if p.encoding == "base64")
    if test == "mime_qp_count":
        return sum(1 for p in parts if p.encoding == "quoted-printable")
    if test == "mime_attachment":
        return any(p.disposition == "attachment" or p.filename for p in parts)
    if test == "mime_base64_encoded_text":
        return any(p.encoding == "base64" and p.content_type.startswith("text/") and
                   not p.filename for p in parts)
    if test == "mime_base64_no_name":
        return any(p.encoding == "base64" and not p.filename and
                   not p.content_type.startswith("text/") for p in parts)
    if test == "mime_qp_long_line":
        return any(p.qp_long_line for p in parts)
    if test == "mime_bad_iso_charset":
        return any(re.fullmatch(r"iso-?8859-?(?:1[1-9]|[2-9]\d)", p.params.get("charset", ""),
                                re.IGNORECASE) for p in parts)
    if test == "mimepart_limit_exceeded":
        return "too_many_parts" in ctx.msg.flags
    return False


@_eval()
def check_for_mime_html(ctx):
    return any(p.content_type == "text/html" for p in ctx.msg.parts)


@_eval()
def check_for_mime_html_only(ctx):
    types = {p.content_type for p in _text_parts(ctx)}
    return types == {"text/html"}


@_eval()
def html_test(ctx, test):
    info = ctx.msg.html
    if test == "html":
        return info.has_html
    if test == "embeds":
        return any(t in info.tags for t in ("embed", "object", "applet"))
    if test == "form_action_mailto":
        return any(l.lower().startswith("mailto:") for l in info.links) and "form" in info.tags
    return False


@_eval()
def html_image_only(ctx, low, high):
    """Images, and an HTML source of low..high characters: HTMLEval reads the HTML part's
    `length`, the length of its markup (not of the rendered words its descriptions name)."""
    info = ctx.msg.html
    return info.has_html and info.images > 0 and _num(low) < info.html_chars <= _num(high)


@_eval()
def html_image_ratio(ctx, low, high):
    info = ctx.msg.html
    if not info.has_html or not info.image_area:
        return False
    ratio = info.non_space_chars / info.image_area     # Message::Node's non_space_len
    return _num(low) < ratio <= _num(high)


@_eval()
def html_tag_exists(ctx, tag):
    return tag.lower() in ctx.msg.html.tags


@_eval()
def image_count(ctx, itype, low, high=None):
    n = sum(1 for p in ctx.msg.parts if p.content_type.startswith("image/") and
            (itype == "all" or p.content_type.endswith(itype)))
    return n >= _num(low) and (high is None or n <= _num(high))


@_eval()
def check_body_length(ctx, maximum):
    return len(ctx.msg.visible_text.strip()) <= _num(maximum)


_LETTER = re.compile(r"[^\W\d_]")
_UPPER = re.compile(r"[A-Z\u00c0-\u00de]")


_ASCII_LETTERS = bytes(range(65, 91)) + bytes(range(97, 123))
_ASCII_UPPER = bytes(range(65, 91))


def _letter_counts(text: str) -> tuple[int, int]:
    """(letters, upper-case letters) of `text`: `_LETTER` and `_UPPER` matches counted.
    ASCII text (the common case) is counted by bytes.translate, without a match list."""
    if text.isascii():
        raw = text.encode("ascii")
        return (len(raw) - len(raw.translate(None, _ASCII_LETTERS)),
                len(raw) - len(raw.translate(None, _ASCII_UPPER)))
    return len(_LETTER.findall(text)), len(_UPPER.findall(text))


def _uppercase_percent(ctx) -> float | None:
    if "uppercase" not in ctx.memo:
        letters, upper = _letter_counts(ctx.msg.visible_text[:20000])
        ctx.memo["uppercase"] = None if letters < 200 else 100.0 * upper / letters
    return ctx.memo["uppercase"]


@_eval()
def check_for_uppercase(ctx, low, high):
    pct = _uppercase_percent(ctx)
    return pct is not None and _num(low) <= pct <= _num(high)


@_eval()
def check_ma_non_text(ctx):
    return any(p.content_type != "text/plain" and p.content_type != "text/html" and
               not p.content_type.startswith("multipart/") for p in ctx.msg.parts) and \
        any(p.content_type.startswith("text/") for p in ctx.msg.parts)


RISKY_EXTENSIONS = {"exe", "scr", "pif", "com", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf",
                    "wsh", "hta", "cpl", "msi", "jar", "lnk", "ps1", "iso", "img", "reg",
                    "docm", "xlsm", "pptm", "chm", "msc", "apk"}


@_eval()
def check_microsoft_executable(ctx):
    return any(p.payload[:2] == b"MZ" for p in ctx.msg.parts if not p.content_type.startswith(
        "text/"))


@_eval()
def mailyard_risky_attachment(ctx):
    """An attachment whose name ends in a type mail clients run (exe, scr, js, ...)."""
    for p in ctx.msg.parts:
        name = p.filename.lower().strip().rstrip(".")
        if "." in name and name.rsplit(".", 1)[1] in RISKY_EXTENSIONS:
            return True
    return False


@_eval()
def mailyard_double_extension(ctx):
    """An attachment named like `invoice.pdf.exe`."""
    return any(re.search(r"\.(?:pdf|docx?|xlsx?|jpe?g|txt|zip)\.[a-z0-9]{2,4}$",
                         p.filename.lower()) for p in ctx.msg.parts)


@_eval()
def check_https_ip_mismatch(ctx):
    return any(re.match(r"(?i)https?://\d+\.\d+\.\d+\.\d+", u) for u in ctx.msg.html.links) and \
        ctx.msg.html.has_html


# -- relays, freemail, shorteners --------------------------------------------------------
@_eval()
def check_all_trusted(ctx):
    """Every hop was trusted: the MTA's fact if it gave one, else the Received path."""
    if "all_trusted" in ctx.facts:
        return bool(ctx.facts.get("all_trusted"))
    path = ctx.relays
    return bool(path.relays) and not path.untrusted and not path.unparseable


@_eval()
def check_no_relays(ctx):
    return not ctx.msg.has_header("Received")


def _domain(addr: str) -> str:
    return addr.rpartition("@")[2].strip().strip(">").lower()


def is_freemail(ctx, addr: str) -> bool:
    if "@" not in addr:
        return False
    domain = _domain(addr)
    domains = ctx.ruleset.freemail_domains
    if domain in domains:
        return True
    patterns = ctx.memo.get("freemail_patterns")
    if patterns is None:        # (built once per scan, not once per address)
        patterns = ctx.memo["freemail_patterns"] = [d for d in domains if "*" in d]
    return any(fnmatch.fnmatchcase(domain, pat) for pat in patterns)


def envelope_from_values(ctx, raw: bool = False) -> list[str]:
    """The MAIL FROM address, found as SpamAssassin's PerMsgStatus::get_envelope_from finds it:
    the MTA's fact (SpamAssassin's `envelope_sender_header`), else the envelope-from the
    relay at the trust boundary recorded in its Received header, else X-Envelope-From,
    Envelope-Sender or Return-Path — each only when no Received header stands above it (one
    written before a relay added its own hop is no longer the envelope). An X-Sender on mail
    fetched by fetchmail means the envelope is unknown (X-Sender itself is never used)."""
    env = ctx.facts.get("envelope_from")
    if env is not None:
        return [str(env)]
    msg = ctx.msg
    path = ctx.relays
    hop = path.untrusted[0] if path.untrusted else (path.trusted[-1] if path.trusted else None)
    if hop is not None and (hop.envfrom.find("@") > 0):
        return [hop.envfrom]
    names = [n.lower() for n, _ in msg.headers]
    if any("@" in a for v in msg.header("X-Sender")[:1] for a in addresses(v)) and \
            any("(fetchmail" in v for v in msg.header("Received")):
        return []
    first_received = names.index("received") if "received" in names else len(names)
    for name, untrusted_stops in (("x-envelope-from", True), ("envelope-sender", False),
                                  ("return-path", False)):
        if name not in names:
            continue
        if len(names) - 1 - names[::-1].index(name) > first_received:
            if untrusted_stops:
                return []
            continue
        return msg.header(name, raw)[:1]
    return []


def _addrs(ctx, header: str) -> list[str]:
    if header == "EnvelopeFrom":
        values = envelope_from_values(ctx)
    else:
        values = ctx.msg.header(header)
    out = []
    for v in values:
        out += addresses(v)
    return [a.lower() for a in out]


FROM_HEADERS = ("From", "Resent-From", "EnvelopeFrom", "Envelope-Sender", "X-Envelope-From",
                "Resent-Sender")


@_eval()
def check_freemail_from(ctx, regex_text=None):
    """Any of the sender addresses (From, Resent-From, the envelope sender, ...) is freemail."""
    addrs = [a for h in FROM_HEADERS for a in _addrs(ctx, h)]
    return any(is_freemail(ctx, a) and (regex_text is None or re.search(regex_text, a))
               for a in addrs)


@_eval()
def check_freemail_header(ctx, header, regex_text=None):
    return any(is_freemail(ctx, a) and (regex_text is None or re.search(regex_text, a))
               for a in _addrs(ctx, header))


# FreeMail.pm: envelope senders of list and bounce mail ($skip_replyto_envfrom), its
# address pattern (valid-TLD check left out), and its body address cleaning
_BULK_ENVFROM = re.compile(r"""(?ix)(?:^(?:post|host|domain)master|^double-bounce
    |^(?:sentto|owner|return|(?:gr)?bounced?)-.+|-(?:request|bounces?|admin|owner)
    |\b(?:do[._-t]?)?no[._-t]?repl(?:y|ies)|.+=.+)@""")
_FM_EMAIL = (r"(?=.{0,64}@)(?<![a-z0-9!#$%&'*+/=?^_`{|}~-])([a-z0-9!#$%&'*+/=?^_`{|}~-]+"
             r"(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,59}[a-z0-9])?\.)"
             r"{1,4}[a-z]{2,63})")
_FM_EMAIL_RE = re.compile("(?i)" + _FM_EMAIL)
_FM_URL_WITH_AT = re.compile(r"(?i)<?https?://\S{0,255}(?:@|%40)\S{0,255}")
_FM_QUOTED = re.compile(r"(?i)<?(?<!mailto:)" + _FM_EMAIL +
                        r"(?:>|\s{1,10}(?!(?:fa(?:x|csi)|tel|phone|e?-?mail))[a-z]{2,11}:)")
FREEMAIL_MAX_BODY_EMAILS = 5
FREEMAIL_MAX_BODY_FREEMAILS = 3


def _freemail_body(ctx) -> list[str] | None:
    """FreeMail::_parse_body: the freemail addresses of the body — mailto: links of the HTML,
    then addresses in the rendered text that are not inside <> nor before "wrote:" — or None
    once the body holds 5 addresses or 3 freemail ones (a list or a directory: skipped)."""
    cached = ctx.memo.get("freemail_body", False)
    if cached is not False:
        return cached
    found: list[str] = []
    for link in ctx.msg.html.links:
        m = re.match(r"(?i)mailto:" + _FM_EMAIL, link)
        if m and m.group(1).lower() not in found and len(found) < 20:
            found.append(m.group(1).lower())
    text = "\n".join(ctx.msg.plain_texts + ctx.msg.html_texts)[:MAX_FREEMAIL_TEXT]
    if "@" in text:
        for line in text.split("\n"):
            if "@" not in line:
                continue
            line = _FM_QUOTED.sub(" ", _FM_URL_WITH_AT.sub(" ", line))
            for m in _FM_EMAIL_RE.finditer(line):
                if m.group(1).lower() not in found:
                    found.append(m.group(1).lower())
            if len(found) >= 40:
                break
    body: list[str] | None = []
    count_fm = 0
    for i, addr in enumerate(found, 1):
        if i == FREEMAIL_MAX_BODY_EMAILS:
            body = None
            break
        if not is_freemail(ctx, addr):
            continue
        count_fm += 1
        if count_fm == FREEMAIL_MAX_BODY_FREEMAILS:
            body = None
            break
        body.append(addr)
    ctx.memo["freemail_body"] = body
    return body


MAX_FREEMAIL_TEXT = 100_000


@_eval()
def check_freemail_replyto(ctx, what="replyto"):
    """FreeMail's check_freemail_replyto: From and Reply-To are different freemail addresses;
    else ('replyto') a freemail Reply-To, or ('reply') a freemail Reply-To or, without one, a
    freemail From, differs from a freemail address written in the body. Mail from a
    list-like envelope sender is skipped (freemail_skip_bulk_envfrom)."""
    env = envelope_from_values(ctx)
    if env and _BULK_ENVFROM.search(env[0].strip().strip("<>")):
        return False
    froms = _addrs(ctx, "From")
    replies = _addrs(ctx, "Reply-To")
    from_fm = any(is_freemail(ctx, a) for a in froms)
    reply_fm = any(is_freemail(ctx, a) for a in replies)
    if from_fm and reply_fm and not any(a in replies for a in froms):
        return True
    if what == "replyto":
        if not reply_fm:
            return False
    elif replies and not reply_fm:
        return False
    elif not from_fm:
        return False
    body = _freemail_body(ctx)
    if not body:
        return False
    targets = replies if what == "replyto" or reply_fm else froms
    return any(b != t for b in body for t in targets)


@_eval()
def check_for_matching_env_and_hdr_from(ctx):
    env = _addrs(ctx, "EnvelopeFrom")
    return bool(env) and env[0] in _addrs(ctx, "From")


@_eval()
def check_for_to_in_subject(ctx, test="address"):
    """HeaderEval's check_for_to_in_subject: the FIRST To: address (SpamAssassin reads
    `To:addr` in scalar context) in the Subject — for 'address' as a whole word anywhere,
    for 'user' its local part only in the shapes a personalised spam subject takes: the
    whole subject ("Re: [word] jdoe"), a salutation ("jdoe, ..." — case-sensitive), or at
    the end ("..., jdoe!"). A plain substring test hit list mail whose subject tag repeats
    the list's address ("[zzzzteana] ..."); SpamAssassin does not."""
    to = [a for v in ctx.msg.header("To") for a in addresses(v)]
    if not to or not to[0]:
        return False
    full_to, subject = to[0], ctx.msg.subject
    if test == "address":
        return re.search(r"(?i)\b" + re.escape(full_to) + r"\b", subject) is not None
    if test != "user":
        return False
    user = re.escape(full_to.split("@", 1)[0])
    return re.match(rf"(?i)(?:(?:re|fw):\s*(?:\w+\s+)?{user}$|(?-i:{user})\s*[,:;!?-](?:$|\s)"
                    rf"|{user}$|,\s*{user}[,:;!?-]$)", subject) is not None


@_eval()
def short_url(ctx):
    shorteners = ctx.ruleset.url_shorteners
    for host in ctx.msg.uri_hosts:
        if host in shorteners:
            return True
        labels = host.split(".")
        for i in range(1, len(labels)):
            if "." + ".".join(labels[i:]) in shorteners:
                return True
    return False


# more families, in their own modules; importing them registers their functions in EVALS
from mailyard.spam import evals_headers, evals_html  # noqa: E402,F401,I001
