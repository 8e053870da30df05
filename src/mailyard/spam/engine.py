"""The spam engine: bytes in, `SpamVerdict` out.

Theory of operation: a `SpamEngine` is built once per process — it loads mailyard's own
rules (src/mailyard/spam/rules/*.cf), then each configured rules directory, compiles them into
a `RuleSet`, and opens the Bayes databases lazily. `scan` parses the message once
(`ParsedMessage`), asks Bayes for a probability (when enough mail has been learned), runs the
header, body, rawbody, full, uri, mimeheader and eval rules (each regex with a timeout, the
whole scan within a time budget, any exception in a rule counted as a miss), then the meta
rules in dependency order, and sums the scores of the score set in use (SpamAssassin's four:
Bayes on/off × network results on/off). When auto-learning is on, a message scoring at least
`autolearn_spam` (without Bayes' own rules) is learned as spam, one at most `autolearn_ham`
as ham.

The engine never touches the network: `dns_queries(message, facts)` lists the DNSBL/URIBL
names its rules would like answered; the caller resolves them and passes the answers back as
`facts["dns"] = {"QNAME/RDTYPE": ["127.0.0.2", ...]}`.
"""

from __future__ import annotations

import ipaddress
import re
import time
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from mailyard.log import get_logger
from mailyard.spam import evals
from mailyard.spam.bayes import BayesDatabases, message_id, tokenize
from mailyard.spam.message import ParsedMessage, addresses, display_name
from mailyard.spam.meta import compile_meta
from mailyard.spam.prefilter import plain_literal
from mailyard.spam.relays import RelayPath, relay_path
from mailyard.spam.rules import MAX_MULTIPLE, RuleLoader, RuleSet, lazy_meta_fns

log = get_logger("spam")

RULE_TIMEOUT = 0.05        # seconds one regex may run on one text
SCAN_BUDGET = 5.0          # seconds for every rule of one message
TUNE_AT = (20, 100, 500, 2000)   # scans after which metas are reordered by measurement
RULE_TEXT_LIMIT = 128 * 1024  # octets of body/rawbody/full text the regexes see
_IP = re.compile(r"\[(\d{1,3}(?:\.\d{1,3}){3})\]|\((?:[^()]*\s)?\[?(\d{1,3}(?:\.\d{1,3}){3})\]?\)")


@dataclass(frozen=True)
class RuleHit:
    """One rule that hit: its name, the score it added, and what it means."""

    name: str
    score: float
    description: str


@dataclass(frozen=True)
class SpamVerdict:
    """The engine's judgement of one message."""

    score: float
    required: float
    is_spam: bool
    hits: tuple[RuleHit, ...]
    bayes_probability: float | None
    autolearn: str              # "no", "spam", "ham" or "disabled"

    @property
    def rule_names(self) -> list[str]:
        return [h.name for h in self.hits]


BAYES_RULES = "23_bayes.cf"


def builtin_rules_dir() -> Path:
    return Path(str(resources.files("mailyard.spam") / "rules"))


def load_ruleset(rules_dirs: list[str | Path], *, builtin: bool = True,
                 regex_cache: str | Path | None = None) -> RuleSet:
    """Load mailyard's rules (if `builtin`), then each directory or .cf file, in order.

    `regex_cache` names a file that keeps compiled regexes between runs (data_dir's
    `spam-regex.cache`); loading the stock SpamAssassin set is then several times faster.
    """
    from mailyard.spam.regexcache import CompiledCache

    loader = RuleLoader(CompiledCache(regex_cache) if regex_cache else None)
    if builtin:
        loader.load_dir(builtin_rules_dir())
    for directory in rules_dirs:
        path = Path(directory)
        if path.is_file():
            loader.load_file(path)
        else:
            loader.load_dir(path)
    if builtin and rules_dirs:
        # BAYES_* score mailyard's classifier, whose calibration differs from SpamAssassin's:
        # our bands and scores win over an imported rule set's.
        loader.load_file(builtin_rules_dir() / BAYES_RULES)
    return loader.finish()


class ScanContext:
    """What eval functions see during one scan."""

    def __init__(self, engine: SpamEngine, msg: ParsedMessage, facts: dict,
                 bayes_probability: float | None):
        self.msg = msg
        self.facts = facts
        self.ruleset = engine.ruleset
        self.rbl_zones = engine.rbl_zones
        self.bayes_probability = bayes_probability
        self.rbl_answers: dict[str, list[str]] = {}
        self._headers: dict[tuple[str, str], str | None] = {}
        self._lower: dict[str, str] = {}
        self._texts: dict[str, tuple[str, str]] = {}
        self._ascii: dict[str, bool] = {}
        self._uris: list[str] | None = None
        self.over_budget = False
        self.memo: dict = {}

    @cached_property
    def client_ips(self) -> list[str]:
        ip = self.facts.get("client_ip")
        if ip:
            return [str(ip)]
        return received_ips(self.msg)[:1]

    @cached_property
    def relays(self) -> RelayPath:
        """The Received path and its trust boundary (mailyard.spam.relays)."""
        return relay_path(self.msg.header("Received"))

    @cached_property
    def date_received_diff_hours(self) -> float | None:
        return evals.date_shift_hours(self.msg.header("Date"), self.msg.header("Received"),
                                      self.relays.boundary_index)

    def rule_text(self, kind: str) -> tuple[str, str]:
        """(octets, lower-cased octets) of the body, rawbody or full text, made once."""
        cached = self._texts.get(kind)
        if cached is None:
            attr = {"body": "body_text", "rawbody": "rawbody_text", "full": "full_text"}[kind]
            text = octets(getattr(self.msg, attr))
            cached = self._texts[kind] = (text, text.lower())
        return cached

    def rule_text_ascii(self, kind: str) -> bool:
        """Whether rule_text(kind) is plain ASCII (then the ASCII regex forms apply)."""
        flag = self._ascii.get(kind)
        if flag is None:
            flag = self._ascii[kind] = self.rule_text(kind)[0].isascii()
        return flag

    def rule_uris(self) -> list[str]:
        if self._uris is None:
            self._uris = [octets(u, 4096) for u in self.msg.uris]
        return self._uris

    def lower(self, text: str) -> str:
        low = self._lower.get(text)
        if low is None:
            low = self._lower[text] = text.lower()
        return low

    def header_text(self, header: str, modifier: str) -> str | None:
        key = (header, modifier)
        if key in self._headers:
            return self._headers[key]
        msg = self.msg
        raw = modifier == "raw"
        if header == "ALL":
            value = octets(msg.all_headers_raw if raw else msg.all_headers_text)
            self._headers[key] = value
            return value
        if header == "ToCc":
            values = msg.header("To", raw) + msg.header("Cc", raw)
        elif header == "MESSAGEID":
            values = (msg.header("Message-ID", raw) + msg.header("Resent-Message-ID", raw)
                      + msg.header("X-Message-ID", raw))
        elif header == "EnvelopeFrom":
            values = evals.envelope_from_values(self, raw)
        elif header.startswith("X-Spam-Relays-") and not msg.has_header(header):
            values = [self.relays.pseudo_header(header[14:])]
        else:
            values = msg.header(header, raw)
        if not values:
            self._headers[key] = None
            return None
        if modifier == "addr":
            values = [(addresses(v) or [v.strip()])[0] for v in values]
        elif modifier == "name":
            values = [display_name(v) for v in values]
        value = octets("\n".join(values))
        self._headers[key] = value
        return value


def received_ips(msg: ParsedMessage) -> list[str]:
    """Public IPs of the relays in Received headers, newest first."""
    out = []
    for value in msg.header("Received"):
        for m in _IP.finditer(value):
            ip = m.group(1) or m.group(2)
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                continue
            if addr.is_global and ip not in out:
                out.append(ip)
    return out


def octets(text: str, limit: int = RULE_TEXT_LIMIT) -> str:
    """Text as SpamAssassin rules see it: UTF-8 octets, one character per byte.

    The stock rules are written against UTF-8 bytes (`[\\xc3][\\xa9]` for "é"), so rules
    match this form; ASCII is unchanged, and the cap bounds every regex's input.
    """
    if text.isascii():
        return text[:limit]
    return text.encode("utf-8", "replace")[:limit].decode("latin-1")


def _search(pattern, text: str) -> bool:
    try:
        return pattern.search(text, timeout=RULE_TIMEOUT) is not None
    except TimeoutError:
        return False


def _count(pattern, text: str, limit: int) -> int:
    n = 0
    try:
        for _ in pattern.finditer(text, timeout=RULE_TIMEOUT):
            n += 1
            if n >= limit:
                break
    except TimeoutError:
        pass
    return n


class _LazyHits(dict):
    """Hit counts by rule name, each rule evaluated the first time someone asks."""

    def __init__(self, engine: SpamEngine, ctx: ScanContext, deadline: float):
        super().__init__()
        self.engine = engine
        self.ctx = ctx
        self.rules = engine.ruleset.rules
        self.deadline = deadline

    def get(self, name: str, default: int = 0) -> int:  # type: ignore[override]
        value = dict.get(self, name)
        if value is None:
            rule = self.rules.get(name)
            if rule is None:
                return default
            dict.__setitem__(self, name, 0)   # a cycle reads 0, never recurses forever
            stats = self.engine._stats
            if stats is None or rule.kind == "meta":
                value = self.engine._evaluate(self.ctx, rule, self)
            else:
                started = time.perf_counter()
                value = self.engine._evaluate(self.ctx, rule, self)
                seen = stats.get(name)
                if seen is None:
                    seen = stats[name] = [0.0, 0, 0]
                seen[0] += time.perf_counter() - started
                seen[1] += 1
                seen[2] += value > 0
            dict.__setitem__(self, name, value)
        return value


class SpamEngine:
    """Rules + Bayes, loaded once; `scan` many times (one engine per worker process)."""

    def __init__(self, rules_dirs: list[str | Path] = (), bayes_path: str | Path | None = None,
                 required_score: float | None = None, *, builtin_rules: bool = True,
                 per_user_bayes: bool = False, bayes_min_learned: int = 200,
                 autolearn: bool = True, autolearn_spam: float = 12.0,
                 autolearn_ham: float = 0.1, ruleset: RuleSet | None = None,
                 regex_cache: str | Path | None = None, optimize: bool = True,
                 automaton_cache: str | Path | None = None):
        self.ruleset = ruleset or load_ruleset(list(rules_dirs), builtin=builtin_rules,
                                               regex_cache=regex_cache)
        self.optimize = optimize
        self.required = float(required_score if required_score is not None
                              else self.ruleset.required_score or 5.0)
        self.bayes = BayesDatabases(bayes_path, per_user=per_user_bayes,
                                    min_learned=bayes_min_learned) if bayes_path else None
        self.autolearn = autolearn and self.bayes is not None
        self.autolearn_spam = autolearn_spam
        self.autolearn_ham = autolearn_ham
        rules = self.ruleset.rules.values()
        self._by_kind = {kind: [r for r in rules if r.kind == kind]
                         for kind in ("header", "body", "rawbody", "full", "uri", "mimeheader")}
        self._metas = [self.ruleset.rules[n] for n in self.ruleset.meta_order]
        # literal prefilters, worked out once per engine (see mailyard.spam.prefilter)
        self._literals = {r.name: r.literals for r in rules if r.pattern is not None}
        # ASCII-subject forms of the text rules' regexes (see mailyard.spam.asciire)
        # `optimize=False` is the reference behaviour the tests compare against: every regex
        # as written, every meta reading its operands in Perl's order.
        self._ascii = {r.name: r.ascii_pattern for r in rules
                       if optimize and (r.ascii_pattern is not None or r.ascii_never)}
        self._meta_fns = {r.name: (r.meta if optimize or not r.meta_text
                                   else compile_meta(r.meta_text)[0])
                          for r in rules if r.kind == "meta"}
        # measured cost and hit rate per rule: after TUNE_AT scans the metas are recompiled
        # to read the operands that are cheapest to decide, as measured, first
        self._stats: dict[str, list] | None = {} if optimize else None
        # counting rules whose regex is a plain string (`/e/`) count with str.count
        self._count_literals = {}
        for r in rules:
            if optimize and r.kind in ("body", "rawbody", "full") and "multiple" in r.tflags:
                for p in (r.pattern, r.ascii_pattern):
                    if p is not None and plain_literal(p.pattern, p.flags):
                        self._count_literals[id(p)] = plain_literal(p.pattern, p.flags)
        # each meta's value when every operand is 0 (used when the automaton proves that)
        self._meta_zero = []
        for name in (self.ruleset.meta_order if optimize else ()):
            rule = self.ruleset.rules[name]
            try:
                value = int(bool(self._meta_fns[name](dict.fromkeys(rule.meta_deps, 0))))
            except Exception:
                continue
            if not value:   # (only zeros: a 1 could reach the noautolearn check unasked)
                self._meta_zero.append((name, frozenset(rule.meta_deps)))
        # one Hyperscan pass per text tells which text/uri rules cannot match (see
        # mailyard.spam.automaton); None without the package, or with optimize=False
        self._automaton = None
        if optimize:
            from mailyard.spam.automaton import RuleAutomaton, default_cache_dir

            cache = automaton_cache or (Path(regex_cache).parent if regex_cache
                                        else default_cache_dir())
            self._automaton = RuleAutomaton.build(rules, cache)
        self._scans = 0
        self.rule_errors = 0
        self._root_cache: dict[tuple, list[str]] = {}
        # which DNSBL zone each check_rbl set name queries (check_rbl_sub reads the set)
        self.rbl_zones: dict[str, str] = {}
        for r in rules:
            if r.eval_name == "check_rbl" and len(r.eval_args) >= 2:
                self.rbl_zones.setdefault(str(r.eval_args[0]), str(r.eval_args[1]))

    @classmethod
    def from_settings(cls, settings) -> SpamEngine:
        spam = settings.spam
        bayes_path = settings.data_path / "bayes.sqlite3" if spam.bayes else None
        return cls(rules_dirs=list(spam.rules_dirs), bayes_path=bayes_path,
                   required_score=spam.required_score,
                   per_user_bayes=getattr(spam, "per_user_bayes", False),
                   bayes_min_learned=getattr(spam, "bayes_min_learned", 200),
                   autolearn=getattr(spam, "auto_learn", True),
                   regex_cache=settings.data_path / "spam-regex.cache")

    # -- scanning --------------------------------------------------------------------------
    def scan(self, message: bytes, *, user: str | None = None,
             facts: dict | None = None) -> SpamVerdict:
        msg = ParsedMessage.parse(message)
        return self.scan_parsed(msg, user=user, facts=facts)

    def scan_parsed(self, msg: ParsedMessage, *, user: str | None = None,
                    facts: dict | None = None) -> SpamVerdict:
        facts = dict(facts or {})
        store = self.bayes.store(user) if self.bayes else None
        tokens = tokenize(msg) if store is not None else None
        probability = store.probability(tokens) if store is not None else None
        ctx = ScanContext(self, msg, facts, probability)
        net = bool(facts.get("dns"))
        scoreset = (2 if probability is not None else 0) + (1 if net else 0)
        learnset = 1 if net else 0
        hits = self._run_rules(ctx, scoreset, learnset)
        self._scans += 1
        if self._stats is not None and self._scans in TUNE_AT:
            self._tune()
        rs = self.ruleset
        total = 0.0
        learn_score = 0.0
        shown: list[RuleHit] = []
        for name, count in hits.items():
            if not count or name.startswith("__"):
                continue
            rule = rs.rules[name]
            score = rs.score(name, scoreset)
            if "net" in rule.tflags and not net and rule.kind != "meta":
                continue    # (SpamAssassin scores a `net` meta without network tests too)
            if score == 0:
                continue
            times = count if "multiple" in rule.tflags else 1
            total += score * times
            if not ({"learn", "userconf", "noautolearn"} & rule.tflags):
                learn_score += rs.score(name, learnset) * times
            shown.append(RuleHit(name, round(score * times, 3), rs.descriptions.get(name, "")))
        shown.sort(key=lambda h: h.name)
        total = round(total, 3)
        autolearn = "disabled"
        if self.autolearn and store is not None:
            autolearn = "no"
            target = None
            if any("noautolearn" in rs.rules[n].tflags for n, c in hits.items() if c):
                learn_score = (self.autolearn_spam + self.autolearn_ham) / 2  # neither
            if learn_score >= self.autolearn_spam:
                target = True
            elif learn_score <= self.autolearn_ham:
                target = False
            if target is not None and tokens is not None:
                try:
                    if store.learn(tokens, message_id(msg), target) or \
                            store.seen(message_id(msg)) == ("spam" if target else "ham"):
                        autolearn = "spam" if target else "ham"
                except Exception as exc:  # a locked or broken DB must not fail the scan
                    log.warning("bayes auto-learn failed: %r", exc)
        return SpamVerdict(score=total, required=self.required, is_spam=total >= self.required,
                           hits=tuple(shown), bayes_probability=probability, autolearn=autolearn)

    def _run_rules(self, ctx: ScanContext, scoreset: int, learnset: int) -> dict[str, int]:
        """Evaluate the rules that can change the score; sub-rules only when a meta asks.

        Rules scoring 0 in both score sets in use are never run (as in SpamAssassin), and a
        `__SUB` rule runs only if a meta rule's expression reaches it — `A && __COSTLY`
        skips the costly regex whenever A missed.
        """
        hits = _LazyHits(self, ctx, time.monotonic() + SCAN_BUDGET)
        if self._automaton is not None:   # the rules it proves cannot hit, with their value
            misses = self._automaton.misses(ctx)
            dict.update(hits, misses)
            # a meta whose operands are all known to be 0 and which is 0 then (worked out
            # once) is decided here, in dependency order, without evaluating it
            zero = {name for name, value in misses.items() if not value}
            decided = [name for name, deps in self._meta_zero   # (adds each to `zero`)
                       if deps <= zero and not zero.add(name)]
            dict.update(hits, dict.fromkeys(decided, 0))
        get = hits.get
        for name in self._roots(scoreset, learnset, bool(ctx.facts.get("dns"))):
            if name not in hits:            # (already known: skip the call)
                get(name)
        return hits

    def _tune(self) -> None:
        """Recompile the metas with the measured cost and hit rate of the rules read so far."""
        stats = self._stats

        def cost(name: str) -> float | None:
            seen = stats.get(name)
            return seen[0] / seen[1] * 1e5 if seen and seen[1] >= 3 else None

        def chance(name: str) -> float | None:
            seen = stats.get(name)
            return seen[2] / seen[1] if seen and seen[1] >= 3 else None

        self._meta_fns.update(lazy_meta_fns(self.ruleset.rules, cost, chance))

    def _roots(self, scoreset: int, learnset: int, net: bool) -> list[str]:
        key = (scoreset, learnset, net)
        roots = self._root_cache.get(key)
        if roots is None:
            rs = self.ruleset
            roots = [n for n, r in rs.rules.items() if not n.startswith("__")
                     and (rs.score(n, scoreset) or rs.score(n, learnset))
                     and (net or "net" not in r.tflags or r.kind == "meta")]
            self._root_cache[key] = roots
        return roots

    def _evaluate(self, ctx: ScanContext, rule, hits: _LazyHits) -> int:
        kind = rule.kind
        if kind == "meta":
            try:
                return int(bool(self._meta_fns[rule.name](hits)))
            except Exception:
                self.rule_errors += 1
                return 0
        if kind == "header":
            return self._header_rule(ctx, rule)
        if rule.pattern is None:
            return self._eval(ctx, rule)
        if kind in ("body", "rawbody", "full"):
            text, lower = ctx.rule_text(kind)
            pattern = rule.pattern
            lits = self._literals.get(rule.name)
            if rule.name in self._ascii and ctx.rule_text_ascii(kind):
                pattern = self._ascii[rule.name]
                if pattern is None:
                    return 0                # cannot match ASCII text at all
                lits = rule.ascii_literals or lits
            if lits is not None and not any(lit in lower for lit in lits):
                return 0
            if time.monotonic() > hits.deadline:
                ctx.over_budget = True
                return 0
            if "multiple" in rule.tflags:
                literal = self._count_literals.get(id(pattern))
                if literal is not None:     # `/e/ multiple`: the same count, in C
                    return min(text.count(literal), rule.maxhits or MAX_MULTIPLE)
                return _count(pattern, text, rule.maxhits or MAX_MULTIPLE)
            return int(_search(pattern, text))
        if kind == "uri":
            return int(any(_search(rule.pattern, u) for u in ctx.rule_uris()))
        if kind == "mimeheader":
            for part in ctx.msg.parts:
                values = part.header(rule.header)
                if values and _search(rule.pattern, octets("\n".join(values))) != rule.negate:
                    return 1
        return 0

    def _header_rule(self, ctx: ScanContext, rule) -> int:
        if rule.pattern is None:
            if rule.exists:   # pseudo-headers (ToCc, MESSAGEID, ...) exist if they have a value
                return int(ctx.header_text(rule.header, "") is not None)
            return self._eval(ctx, rule)
        text = ctx.header_text(rule.header, rule.modifier)
        if text is None:
            if rule.if_unset is None:
                text = ""
            else:
                text = rule.if_unset
        lits = self._literals.get(rule.name)
        if lits is not None:
            lower = ctx.lower(text)
            if not any(lit in lower for lit in lits):
                return int(rule.negate)
        return int(_search(rule.pattern, text) != rule.negate)

    def _eval(self, ctx: ScanContext, rule) -> int:
        try:
            result = evals.EVALS[rule.eval_name](ctx, *rule.eval_args)
        except Exception:
            self.rule_errors += 1
            return 0
        return int(result) if result else 0

    # -- DNS wishes --------------------------------------------------------------------------
    def dns_queries(self, message: bytes | ParsedMessage, *,
                    facts: dict | None = None) -> list[tuple[str, str]]:
        """(qname, rdtype) pairs the DNSBL/URIBL rules want answered for this message."""
        msg = message if isinstance(message, ParsedMessage) else ParsedMessage.parse(message)
        ctx = ScanContext(self, msg, dict(facts or {}), None)
        wanted: list[tuple[str, str]] = []
        for rule in self.ruleset.rules.values():
            for kind, zone, rdtype in rule.lookups:
                if kind == "rbl":
                    names = evals.rbl_queries(ctx.client_ips, zone)
                else:
                    names = [evals.uribl_qname(h, zone) for h in msg.uri_hosts[:20]]
                for name in names:
                    if name and (name, rdtype) not in wanted:
                        wanted.append((name, rdtype))
        return wanted

    # -- learning ----------------------------------------------------------------------------
    def learn(self, message: bytes, is_spam: bool, *, user: str | None = None,
              forget: bool = False) -> bool:
        """Teach Bayes one message; False if it was already learned that way (or forgotten)."""
        if self.bayes is None:
            raise RuntimeError("Bayes is disabled ([spam] bayes = false)")
        msg = ParsedMessage.parse(message)
        return self.bayes.store(user).learn(tokenize(msg), message_id(msg), is_spam,
                                            forget=forget)

    def close(self) -> None:
        if self.bayes is not None:
            self.bayes.close()


def header_fields(verdict: SpamVerdict) -> list[tuple[str, str]]:
    """SpamAssassin-compatible X-Spam-* header fields (values unfolded)."""
    fields = []
    if verdict.is_spam:
        fields.append(("X-Spam-Flag", "YES"))
    fields.append(("X-Spam-Score", f"{verdict.score:.1f}"))
    level = "*" * max(0, min(50, int(verdict.score)))
    fields.append(("X-Spam-Level", level))
    tests = ",".join(verdict.rule_names) or "none"
    status = (f"{'Yes' if verdict.is_spam else 'No'}, score={verdict.score:.1f} "
              f"required={verdict.required:.1f} tests={tests} autolearn={verdict.autolearn}")
    fields.append(("X-Spam-Status", status))
    return fields


def fold(name: str, value: str, width: int = 78) -> str:
    """`Name: value` folded at commas and spaces (RFC 5322 §2.2.3), lines joined with \\n."""
    line = f"{name}: "
    out: list[str] = []
    for word in re.split(r"(?<=[, ])", value):
        if len(line) + len(word) > width and line.strip():
            out.append(line.rstrip(" "))
            line = "\t"
        line += word
    out.append(line)
    return "\n".join(out)
