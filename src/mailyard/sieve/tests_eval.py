"""Evaluating Sieve tests (the `if` conditions) for the interpreter.

A mixin of `Interpreter`: each `t_NAME` method evaluates one test against the message,
envelope and state; `compare` applies comparator + match type (+ relational) to a list of
values and keys and sets match variables (RFC 5229 §3.2) when :matches/:regex succeed.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

from mailyard.sieve.grammar import Test
from mailyard.sieve.match import match_value, numeric
from mailyard.sieve.message import html_to_text, part_text

DEFAULT_DUPLICATE_SECONDS = 7 * 86400


class SieveRuntimeError(Exception):
    """A runtime failure; the run ends, its actions are dropped and the message is kept."""


def address_part(address: str, part: str) -> str | None:
    """RFC 5228 §2.7.4 and RFC 5233: the requested part of an addr-spec (None = no match)."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if part == "all":
        return address
    if part == "localpart":
        return local
    if part == "domain":
        return domain
    user, plus, detail = local.partition("+")
    if part == "user":
        return user
    return detail if plus else None  # :detail has no value without the separator


class TestEvaluator:
    """Mixin: needs `self.message`, `self.envelope`, `self.context`, `self.step()`,
    `self.expand()`, `self.set_match_variables()`, `self.flags_of()`."""

    def test(self, test: Test) -> bool:
        self.step()
        method = getattr(self, "t_" + test.name)
        return bool(method(test))

    # -- logic ---------------------------------------------------------------------------
    def t_true(self, test: Test) -> bool:
        return True

    def t_false(self, test: Test) -> bool:
        return False

    def t_not(self, test: Test) -> bool:
        return not self.test(test.tests[0])

    def t_allof(self, test: Test) -> bool:
        return all(self.test(t) for t in test.tests)

    def t_anyof(self, test: Test) -> bool:
        return any(self.test(t) for t in test.tests)

    # -- matching ------------------------------------------------------------------------
    def compare(self, test: Test, values: list[str], keys: list[str],
                capture: bool = True) -> bool:
        tagged = test.tagged
        match = tagged.get("match", "is")
        comparator = tagged.get("comparator", "i;ascii-casemap")
        relation = tagged.get("relation")
        keys = [self.expand(k) for k in keys]
        if match == "count":
            # RFC 5231 §4.2: the count is compared to the key with the given comparator
            # (scripts say :comparator "i;ascii-numeric" to compare numbers).
            count = str(len(values))
            return any(match_value(count, k, "value", comparator, relation) for k in keys)
        for value in values:
            cost = 1 + (len(value) >> 16)  # long values (bodies) cost more of the budget
            for key in keys:
                self.step(cost)
                result = match_value(value, key, match, comparator, relation)
                if result:
                    if capture and isinstance(result, list):
                        self.set_match_variables(result)
                    return True
        return False

    def _select(self, test: Test, items: list):
        """RFC 5260 §6: :index N [:last] picks one header field occurrence."""
        index = test.tagged.get("index")
        if index is None:
            return items
        if index < 1 or index > len(items):
            return []
        return [items[-index] if test.tagged.get("last") else items[index - 1]]

    # -- RFC 5228 tests ------------------------------------------------------------------
    def t_header(self, test: Test) -> bool:
        names, keys = test.positional
        values: list[str] = []
        for name in names:
            values.extend(self._select(test, self.message.header_values(self.expand(name))))
        return self.compare(test, values, keys)

    def t_address(self, test: Test) -> bool:
        names, keys = test.positional
        part = test.tagged.get("address_part", "all")
        values: list[str] = []
        for name in names:
            for field_addrs in self._select(test, self.message.addresses(self.expand(name))):
                for addr in field_addrs:
                    value = address_part(addr, part)
                    if value is not None:
                        values.append(value)
        return self.compare(test, values, keys)

    def t_envelope(self, test: Test) -> bool:
        parts, keys = test.positional
        part = test.tagged.get("address_part", "all")
        values: list[str] = []
        env = self.envelope
        for name in parts:
            name = self.expand(name).lower()
            addr = {"from": env.sender, "to": env.recipient, "auth": env.auth}.get(name)
            if addr is None or (name == "auth" and not addr):
                continue
            addr = addr.strip().strip("<>")
            # RFC 5228 §5.4: the null reverse-path is the empty string.
            value = "" if addr == "" and part in ("all", "localpart", "domain") else (
                address_part(addr, part) if addr else None)
            if value is not None:
                values.append(value)
        return self.compare(test, values, keys)

    def t_exists(self, test: Test) -> bool:
        return all(self.message.has_header(self.expand(n)) for n in test.positional[0])

    def t_size(self, test: Test) -> bool:
        limit = test.positional[0]
        size = self.message.size
        return size > limit if test.tagged.get("over") else size < limit

    # -- variables / imap4flags ----------------------------------------------------------
    def t_string(self, test: Test) -> bool:
        sources, keys = test.positional
        values = [self.expand(s) for s in sources]
        if test.tagged.get("match") == "count":
            values = [v for v in values if v != ""]
        return self.compare(test, values, keys)

    def t_hasflag(self, test: Test) -> bool:
        if len(test.positional) == 2:
            names, keys = test.positional
            flags: list[str] = []
            for name in names:
                flags.extend(self.flags_of(self.expand(name)))
        else:
            keys = test.positional[0]
            flags = self.flags_of(None)
        expanded: list[str] = []
        for key in keys:
            expanded.extend(self.expand(key).split())
        return self.compare(test, flags, expanded)

    # -- body (RFC 5173) -----------------------------------------------------------------
    def t_body(self, test: Test) -> bool:
        keys = test.positional[0]
        tagged = test.tagged
        if tagged.get("raw"):
            texts = [self.message.body_bytes.decode("utf-8", "replace")]
        else:
            wanted = ["text"] if "content" not in tagged else [
                self.expand(t).lower() for t in tagged["content"]]
            texts = []
            for part in self.message.mime.walk():
                self.step()
                ctype = part.get_content_type().lower()
                main = ctype.split("/")[0]
                if part.is_multipart():
                    continue
                if any(w == "" or w == ctype or ("/" not in w and w == main) for w in wanted):
                    text = part_text(part)
                    if "content" not in tagged and ctype == "text/html":
                        text = html_to_text(text)
                    texts.append(text)
        # Bodies do not set match variables (as in Dovecot): ${1} could be megabytes.
        return self.compare(test, texts, keys, capture=False)

    # -- mailbox (RFC 5490) --------------------------------------------------------------
    def t_mailboxexists(self, test: Test) -> bool:
        return all(self.context.mailbox_exists(self.expand(n)) for n in test.positional[0])

    # -- date / index (RFC 5260) ---------------------------------------------------------
    def t_date(self, test: Test) -> bool:
        header, part, keys = test.positional
        values = []
        header = self.expand(header)
        for raw in self._select(test, self.message.header_values(header)):
            if header.lower() == "received":
                raw = raw.rpartition(";")[2]  # RFC 5260 §4.1: the date follows the ";"
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError, OverflowError):
                continue
            if when is None:
                continue
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            when = self._zone(test, when, original_ok=True)
            if when is not None:
                values.append(date_part(when, self.expand(part).lower()))
        return self.compare(test, values, keys)

    def t_currentdate(self, test: Test) -> bool:
        part, keys = test.positional
        when = self._zone(test, self.context.now(), original_ok=False)
        if when is None:
            return False
        return self.compare(test, [date_part(when, self.expand(part).lower())], keys)

    def _zone(self, test: Test, when: dt.datetime, original_ok: bool) -> dt.datetime | None:
        if test.tagged.get("originalzone") and original_ok:
            return when
        zone = test.tagged.get("zone")
        if zone is None:
            return when.astimezone(self.context.now().tzinfo)
        m = re.fullmatch(r"([+-])(\d\d)(\d\d)", self.expand(zone))
        if not m:
            return None
        offset = dt.timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return when.astimezone(dt.timezone(-offset if m.group(1) == "-" else offset))

    # -- duplicate (RFC 7352) ------------------------------------------------------------
    def t_duplicate(self, test: Test) -> bool:
        tagged = test.tagged
        if "uniqueid" in tagged:
            unique = self.expand(tagged["uniqueid"])
        else:
            values = self.message.header_values(self.expand(tagged.get("header", "Message-ID")))
            if not values or not values[0].strip():
                return False
            unique = values[0].strip()
        handle = self.expand(tagged.get("handle", ""))
        seconds = tagged.get("seconds", DEFAULT_DUPLICATE_SECONDS)
        key = f"{handle}\x00{unique}"
        return self.context.duplicate_seen(key, seconds, last=bool(tagged.get("last")))

    # -- spamtest / virustest (RFC 5235) -------------------------------------------------
    def t_spamtest(self, test: Test) -> bool:
        return self.compare(test, [spam_value(self.message, bool(test.tagged.get("percent")))],
                            [test.positional[0]])

    def t_virustest(self, test: Test) -> bool:
        return self.compare(test, [virus_value(self.message)], [test.positional[0]])


def date_part(when: dt.datetime, part: str) -> str:
    """RFC 5260 §4.2 date-part strings."""
    if part == "year":
        return f"{when.year:04d}"
    if part == "month":
        return f"{when.month:02d}"
    if part == "day":
        return f"{when.day:02d}"
    if part == "date":
        return f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
    if part == "julian":
        # Modified Julian Day: days since 1858-11-17.
        return str((when.date() - dt.date(1858, 11, 17)).days)
    if part == "hour":
        return f"{when.hour:02d}"
    if part == "minute":
        return f"{when.minute:02d}"
    if part == "second":
        return f"{when.second:02d}"
    if part == "time":
        return f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}"
    if part == "iso8601":
        return when.isoformat(timespec="seconds")
    if part == "std11":
        return email.utils.format_datetime(when)
    if part == "zone":
        off = when.utcoffset() or dt.timedelta(0)
        sign = "-" if off < dt.timedelta(0) else "+"
        minutes = abs(int(off.total_seconds())) // 60
        return f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    if part == "weekday":
        return str((when.weekday() + 1) % 7)  # 0 = Sunday
    return ""


_SCORE = re.compile(r"score=(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_REQUIRED = re.compile(r"required=(-?\d+(?:\.\d+)?)", re.IGNORECASE)


def spam_value(message, percent: bool, default_required: float = 5.0) -> str:
    """RFC 5235 §3.2 spamtest value from the filter's X-Spam-Score / X-Spam-Status headers.

    "0" means the message was not tested (with :percent, "0" is also "clearly not spam").
    Otherwise the score is scaled so that the spam
    threshold ("required") maps to 5 and twice the threshold or more to 10 (:percent: the
    threshold maps to 50, twice it to 100); scores at or below zero map to 1 (0 percent).
    """
    score = required = None
    for status in message.header_values("X-Spam-Status"):
        m = _SCORE.search(status)
        if m:
            score = float(m.group(1))
        r = _REQUIRED.search(status)
        if r:
            required = float(r.group(1))
    if score is None:
        for raw in message.header_values("X-Spam-Score"):
            try:
                score = float(raw.split()[0])
                break
            except (ValueError, IndexError):
                continue
    if score is None:
        # mailyard's filter always adds X-Virus-Scanned and adds the spam fields only
        # above its tag level: scanned without spam fields means "tested, not spam".
        scanned = any(v.lower().startswith("mailyard")
                      for v in message.header_values("X-Virus-Scanned"))
        if scanned:
            return "0" if percent else "1"
        return "0"
    required = required if required and required > 0 else default_required
    ratio = max(0.0, min(1.0, score / (2 * required)))
    if percent:
        return str(round(ratio * 100))
    if score <= 0:
        return "1"
    return str(max(1, min(10, round(ratio * 10))))


def virus_value(message) -> str:
    """RFC 5235 §3.3 virustest value: 0 not tested, 1 clean, 5 infected.

    Read from X-Virus-Status (Clean / Infected) or, failing that, X-Virus-Scanned (tested,
    nothing found: the filter quarantines what it finds).
    """
    for status in message.header_values("X-Virus-Status"):
        word = status.strip().lower()
        if word.startswith(("infected", "yes")):
            return "5"
        if word.startswith(("clean", "no")):
            return "1"
    if message.has_header("X-Virus-Scanned"):
        return "1"
    return "0"


__all__ = ["SieveRuntimeError", "TestEvaluator", "address_part", "date_part", "numeric"]
