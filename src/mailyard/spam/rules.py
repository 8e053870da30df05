"""Load SpamAssassin-syntax rule files (.cf) into a `RuleSet`.

Theory of operation: `RuleLoader.load_dir/load_file` read lines in order (SpamAssassin's
semantics: files sorted by name, a later definition of a rule replaces the earlier one),
strip comments, track `if`/`ifplugin`/`else`/`endif` with a stack, and record each rule's
raw definition. Nothing is compiled while reading, because `replace_rules` and `score` may
come later than the rule they change. `RuleLoader.finish()` then applies the ReplaceTags
substitutions, compiles every regex (Perl syntax through `mailyard.spam.perlre`), resolves
`eval:` names against `mailyard.spam.evals.EVALS`, translates and orders `meta` expressions,
and returns the immutable `RuleSet`. A rule that fails any step is skipped and recorded in
`RuleSet.skipped` as (rule, "file:line", reason) — loading never fails on one bad rule.

Supported directives: header (NAME, ALL, ToCc, MESSAGEID, EnvelopeFrom, `:name`/`:addr`/`:raw`,
`=~`/`!~`, `exists:`, `[if-unset: ...]`), body, rawbody, full, uri, mimeheader, meta, score
(1 or 4 values), describe, tflags, required_score/required_hits, include, if/ifplugin/else/
endif, replace_tag/pre/inter/post/rules, uridnsbl, urirhssub, urirhsbl, freemail_domains,
url_shortener, welcomelist_bounce_relays, and mailyard's own `yield_to OURS THEIRS...` (OURS
scores 0 once any of THEIRS is loaded: our rules fill in for a missing stock ruleset without
scoring a signal twice beside it). Everything else is counted in `RuleSet.ignored` by
directive name.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import regex

from mailyard.spam import evals
from mailyard.spam.asciire import NEVER, ascii_variant
from mailyard.spam.meta import MetaError, compile_meta
from mailyard.spam.perlre import PerlRegexError, compile_pattern, parse_match
from mailyard.spam.prefilter import required_literals

TEXT_KINDS = ("body", "rawbody", "full")
RULE_TYPES = ("header", "body", "rawbody", "full", "uri", "mimeheader", "meta")

# Plugins whose rules we evaluate (their `ifplugin` blocks are read); the rest are skipped
# and reported as "needs plugin X".
PLUGINS = {
    "ReplaceTags", "MIMEHeader", "HeaderEval", "BodyEval", "MIMEEval", "HTMLEval", "Bayes",
    "SPF", "DKIM", "DMARC", "DNSEval", "URIDNSBL", "WLBLEval", "URIEval", "FreeMail",
    "Check", "ImageInfo", "Dmarc", "RelayEval", "VBounce",
}
VERSION = 4.000001
_IF_CAN = re.compile(r"(!?)\s*can\(\s*([\w:]+)\s*\)")
_IF_PLUGIN = re.compile(r"(!?)\s*plugin\(\s*([\w:]+)\s*\)")
_IF_UNSET = re.compile(r"\s*\[if-unset:\s*(.*)\]\s*$")
_EVAL = re.compile(r"^eval:\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$")
_TAG_RUN = re.compile(r"(?:<[A-Za-z0-9_]+>)+")
_TAG_DIRECTIVE = re.compile(r"<(pre|inter|post)\s+([A-Za-z0-9_]+)>")
_RULE_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


class RuleLoadError(Exception):
    """A rules file or directory that cannot be read at all."""


@dataclass(frozen=True)
class Rule:
    """One compiled rule, ready for the engine."""

    name: str
    kind: str                       # header/body/rawbody/full/uri/mimeheader/meta
    where: str                      # file:line
    pattern: object = None          # compiled regex, or None for eval/exists/meta
    negate: bool = False            # `!~`
    header: str = ""                # header name (or ALL, ToCc, ...)
    modifier: str = ""              # "", "name", "addr", "raw"
    if_unset: str | None = None
    exists: bool = False
    eval_name: str = ""
    eval_args: tuple = ()
    meta: object = None             # compiled meta expression
    meta_deps: tuple[str, ...] = ()
    meta_text: str = ""             # the expression, recompiled cost-aware by finish()
    tflags: frozenset[str] = frozenset()
    maxhits: int = 0
    lookups: tuple = ()             # DNS lookups wanted (see engine.dns_queries)
    literals: frozenset | None = None  # prefilter: a match contains one of these
    ascii_pattern: object = None    # the regex for ASCII-only text (mailyard.spam.asciire)
    ascii_never: bool = False       # the regex cannot match any ASCII-only text
    ascii_literals: frozenset | None = None  # prefilter of ascii_pattern (ASCII text only)


@dataclass
class RuleSet:
    """Every loaded rule with its scores and descriptions, and what was skipped."""

    rules: dict[str, Rule]
    scores: dict[str, tuple[float, float, float, float]]
    descriptions: dict[str, str]
    required_score: float | None
    meta_order: list[str]
    skipped: list[tuple[str, str, str]]
    ignored: Counter
    files: list[str]
    uridnsbl: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    freemail_domains: frozenset[str] = frozenset()      # `freemail_domains` (may hold *)
    url_shorteners: frozenset[str] = frozenset()        # `url_shortener` (.x = subdomains)
    bounce_relays: frozenset[str] = frozenset()         # `welcomelist_bounce_relays` (VBounce)

    def by_kind(self, kind: str) -> list[Rule]:
        return [r for r in self.rules.values() if r.kind == kind]

    def score(self, name: str, scoreset: int) -> float:
        scores = self.scores.get(name)
        if scores is None:
            if name.startswith("__"):
                return 0.0
            if name.startswith("T_"):
                return 0.01
            rule = self.rules.get(name)
            return -1.0 if rule is not None and "nice" in rule.tflags else 1.0
        return scores[scoreset]

    def report(self) -> dict:
        reasons = Counter(_reason_class(r) for _, _, r in self.skipped)
        return {"files": len(self.files), "loaded": len(self.rules),
                "skipped": len(self.skipped), "skipped_by_reason": dict(reasons.most_common()),
                "ignored_directives": dict(self.ignored.most_common())}


def _reason_class(reason: str) -> str:
    if reason.startswith("needs plugin"):
        return reason
    if reason.startswith("unsupported eval"):
        return "unsupported eval"
    if reason.startswith("regex"):
        return "regex does not compile"
    if reason.startswith("meta: depends on missing"):
        return "meta over a skipped or undefined rule"
    if reason.startswith("meta"):
        return "meta expression"
    if reason.startswith(("if ", "else of")):
        return "inactive if-block"
    return reason.split(":")[0]


@dataclass
class _Def:
    name: str
    kind: str
    text: str
    where: str


class RuleLoader:
    """Reads .cf files in order and builds a `RuleSet` (see the module docstring)."""

    def __init__(self, regex_cache=None) -> None:
        self.regex_cache = regex_cache
        self.defs: dict[str, _Def] = {}
        self.scores: dict[str, tuple[float, float, float, float]] = {}
        self.descriptions: dict[str, str] = {}
        self.tflags: dict[str, str] = {}
        self.required_score: float | None = None
        self.skipped: dict[str, tuple[str, str, str]] = {}
        self.ignored: Counter = Counter()
        self.yields: dict[str, list[str]] = {}
        self.files: list[str] = []
        self.replace_tags: dict[str, str] = {}
        self.replace_kinds: dict[str, str] = {}
        self.replace_rules: set[str] = set()
        self.uridnsbl: dict[str, tuple[str, str, str]] = {}
        self.freemail_domains: set[str] = set()
        self.url_shorteners: set[str] = set()
        self.bounce_relays: set[str] = set()
        self._depth = 0

    # -- reading -----------------------------------------------------------------------------
    def load_dir(self, directory: str | Path) -> None:
        path = Path(directory)
        if not path.is_dir():
            raise RuleLoadError(f"{path}: not a directory of rules")
        for file in sorted(path.glob("*.cf")):
            self.load_file(file)

    def load_text(self, text: str, origin: str = "<rules>") -> None:
        self._read_lines(text.splitlines(), origin, Path("."))

    def load_file(self, file: str | Path) -> None:
        file = Path(file)
        if self._depth > 10:
            raise RuleLoadError(f"{file}: include nesting too deep")
        try:
            text = file.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise RuleLoadError(f"{file}: {exc.strerror}") from None
        self.files.append(str(file))
        self._depth += 1
        try:
            self._read_lines(text.splitlines(), str(file), file.parent)
        finally:
            self._depth -= 1

    def _read_lines(self, lines: list[str], origin: str, base: Path) -> None:
        # stack of (active, reason-if-inactive)
        stack: list[tuple[bool, str]] = []
        for lineno, line in enumerate(lines, 1):
            line = _strip_comment(line)
            if not line:
                continue
            parts = line.split(None, 1)
            directive = parts[0].lower()
            rest = parts[1].strip() if len(parts) > 1 else ""
            where = f"{origin}:{lineno}"
            if directive in ("if", "ifplugin"):
                ok, why = self._condition(directive, rest)
                stack.append((ok, why))
                continue
            if directive == "else":
                if stack:
                    ok, why = stack.pop()
                    stack.append((not ok, f"else of {why}" if ok else why))
                continue
            if directive == "endif":
                if stack:
                    stack.pop()
                continue
            active = all(ok for ok, _ in stack)
            if not active:
                if directive in RULE_TYPES:
                    name = rest.split(None, 1)[0] if rest else "?"
                    reason = next(w for o, w in stack if not o)
                    if name not in self.defs:
                        self.skipped[name] = (name, where, reason)
                continue
            try:
                self._directive(directive, rest, where, base)
            except (ValueError, IndexError) as exc:
                self.ignored[f"bad {directive}"] += 1
                name = rest.split(None, 1)[0] if rest else "?"
                if directive in RULE_TYPES:
                    self.skipped[name] = (name, where, f"syntax: {exc}")

    def _condition(self, directive: str, expr: str) -> tuple[bool, str]:
        if directive == "ifplugin":
            plugin = expr.strip().rsplit("::", 1)[-1]
            return plugin in PLUGINS, f"needs plugin {plugin}"
        text = _IF_PLUGIN.sub(lambda m: str((m.group(2).rsplit("::", 1)[-1] in PLUGINS)
                                            ^ bool(m.group(1))), expr)
        text = _IF_CAN.sub(lambda m: str(_can(m.group(2)) ^ bool(m.group(1))), text)
        text = re.sub(r"\bperl_version\b", "5.036", text)
        text = re.sub(r"\bversion\b", repr(VERSION), text)
        text = text.replace("&&", " and ").replace("||", " or ")
        text = re.sub(r"!(?!=)", " not ", text)
        try:
            ok = bool(eval(compile(text.strip(), "<if>", "eval"), {"__builtins__": {}}, {}))
        except Exception:
            ok = False
        return ok, f"if {expr.strip()}"

    def _directive(self, directive: str, rest: str, where: str, base: Path) -> None:
        if directive in RULE_TYPES:
            name, text = _name_and_rest(rest)
            if not _RULE_NAME.match(name):
                raise ValueError(f"bad rule name {name!r}")
            self.defs[name] = _Def(name, directive, text, where)
            self.skipped.pop(name, None)
        elif directive == "score":
            fields = rest.split()
            values = [float(v) for v in fields[1:5]]
            if len(values) == 1:
                values *= 4
            elif len(values) != 4:
                raise ValueError("score needs 1 or 4 values")
            self.scores[fields[0]] = tuple(values)  # type: ignore[assignment]
        elif directive == "describe":
            name, text = _name_and_rest(rest)
            self.descriptions[name] = text
        elif directive == "tflags":
            name, text = _name_and_rest(rest)
            self.tflags[name] = text
        elif directive in ("required_score", "required_hits"):
            self.required_score = float(rest.split()[0])
        elif directive == "include":
            target = (base / rest.strip()).resolve()
            self.load_file(target)
        elif directive in ("replace_tag", "replace_pre", "replace_inter", "replace_post"):
            tag, value = _name_and_rest(rest)
            self.replace_tags[tag] = value
            self.replace_kinds[tag] = directive.split("_")[1]
        elif directive == "replace_rules":
            self.replace_rules.update(rest.split())
        elif directive == "freemail_domains":
            self.freemail_domains.update(d.lower() for d in rest.split())
        elif directive == "yield_to":
            # mailyard's own: `yield_to OURS THEIRS...` — OURS scores nothing once any of THEIRS
            # is loaded (the same signal is then scored once, by the other ruleset's rule)
            name, *others = rest.split()
            if not _RULE_NAME.match(name) or not others:
                raise ValueError(f"bad yield_to {rest!r}")
            self.yields[name] = others
        elif directive == "url_shortener":
            self.url_shorteners.update(d.lower() for d in rest.split())
        elif directive in ("welcomelist_bounce_relays", "whitelist_bounce_relays"):
            self.bounce_relays.update(d.lower().rstrip(".") for d in rest.split())
        elif directive in ("uridnsbl", "urirhssub", "urirhsbl"):
            fields = rest.split()
            name, zone, rdtype = fields[0], fields[1], fields[2]
            sub = fields[3] if len(fields) > 3 else ""
            self.uridnsbl[name] = (zone.rstrip(".") + ".", rdtype.upper(), sub)
        else:
            self.ignored[directive] += 1

    # -- compiling ---------------------------------------------------------------------------
    def finish(self) -> RuleSet:
        rules: dict[str, Rule] = {}
        skipped = dict(self.skipped)
        for name, d in self.defs.items():
            try:
                rule = self._compile(d)
            except (PerlRegexError, MetaError, ValueError, SyntaxError) as exc:
                skipped[name] = (name, d.where, str(exc))
                continue
            rules[name] = rule
        # A meta over a rule that is not there (never defined, or skipped above) is skipped
        # too, transitively, as SpamAssassin disables metas with undefined dependencies:
        # evaluating `A && !__MISSING` as if __MISSING never hit would fire where the
        # rule's authors meant it not to.
        changed = True
        while changed:
            changed = False
            for name, rule in list(rules.items()):
                if rule.kind != "meta":
                    continue
                missing = next((d for d in rule.meta_deps if d not in rules), None)
                if missing is not None:
                    del rules[name]
                    skipped[name] = (name, rule.where, f"meta: depends on missing {missing}")
                    changed = True
        # a rule that yields to a loaded one keeps running (metas may read it) but scores 0
        for name, others in self.yields.items():
            if name in rules and any(o in rules and o != name for o in others):
                self.scores[name] = (0.0, 0.0, 0.0, 0.0)
        # meta rules: order by dependencies; a cycle skips the rules in it
        order = _meta_order(rules, skipped)
        _lazy_metas(rules)
        if self.regex_cache is not None:
            self.regex_cache.save()
        return RuleSet(rules=rules, scores=self.scores, descriptions=self.descriptions,
                       required_score=self.required_score, meta_order=order,
                       skipped=sorted(skipped.values(), key=lambda s: s[1]),
                       ignored=self.ignored, files=self.files, uridnsbl=self.uridnsbl,
                       freemail_domains=frozenset(self.freemail_domains),
                       url_shorteners=frozenset(self.url_shorteners),
                       bounce_relays=frozenset(self.bounce_relays))

    def _compile(self, d: _Def) -> Rule:
        tflags_text = self.tflags.get(d.name, "")
        tflags = frozenset(t.split("=")[0] for t in tflags_text.split())
        maxhits = 0
        m = re.search(r"maxhits=(\d+)", tflags_text)
        if m:
            maxhits = int(m.group(1))
        common = dict(name=d.name, kind=d.kind, where=d.where, tflags=tflags, maxhits=maxhits)
        text = d.text
        if d.kind == "meta":
            code, deps = compile_meta(text)
            return Rule(meta=code, meta_deps=tuple(deps), meta_text=text, **common)
        if text.startswith("eval:"):
            em = _EVAL.match(text)
            if not em:
                raise ValueError(f"syntax: bad eval {text[:60]!r}")
            fname, argtext = em.group(1), em.group(2)
            if fname not in evals.EVALS:
                raise ValueError(f"unsupported eval: {fname}")
            args = _eval_args(argtext)
            lookups = evals.lookups_for(fname, args, d.name, self.uridnsbl)
            return Rule(eval_name=fname, eval_args=args, lookups=lookups, **common)
        if d.kind in ("header", "mimeheader"):
            if text.startswith("exists:"):
                return Rule(header=text[7:].strip(), exists=True, **common)
            hm = re.match(r"^([^\s:=!~]+)((?::\w+)*)\s*(=~|!~)\s*(.*)$", text, re.DOTALL)
            if not hm:
                raise ValueError(f"syntax: bad header rule {text[:60]!r}")
            header, modifier, op, expr = hm.groups()
            unset = None
            um = _IF_UNSET.search(expr)
            if um:
                unset = um.group(1)
                expr = expr[:um.start()]
            pattern = self._regex(d.name, expr)
            mods = [m for m in (modifier or "").lower().split(":") if m]
            # `:raw` combined with `:name`/`:addr` keeps the extraction (decoding is moot)
            mod = next((m for m in mods if m in ("name", "addr")), mods[0] if mods else "")
            return Rule(pattern=pattern, negate=op == "!~", header=header,
                        modifier=mod, if_unset=unset, literals=self._literals(pattern),
                        **common)
        # SpamAssassin tests `body`/`rawbody` rules against each paragraph (line) on its own,
        # so ^ and $ anchor at paragraph boundaries: our text joins them with "\n"
        pattern = self._regex(d.name, text, multiline=d.kind in ("body", "rawbody"))
        ascii_pattern, never = self._ascii(pattern) if d.kind in TEXT_KINDS else (None, False)
        return Rule(pattern=pattern, literals=self._literals(pattern),
                    ascii_pattern=ascii_pattern, ascii_never=never,
                    ascii_literals=self._literals(ascii_pattern) if ascii_pattern else None,
                    **common)

    def _ascii(self, pattern) -> tuple[object, bool]:
        """(compiled ASCII-subject form or None, whether no ASCII text can match)."""
        if self.regex_cache is not None:
            source = self.regex_cache.ascii_variant(pattern.pattern, pattern.flags)
        else:
            source = ascii_variant(pattern.pattern, pattern.flags)
        if source is None:
            return None, False
        if source == NEVER:
            return None, True
        try:
            if self.regex_cache is not None:
                return self.regex_cache.compile(source, 0), False
            return regex.compile(source), False
        except (regex.error, RecursionError, OverflowError):
            return None, False

    def _literals(self, pattern):
        if self.regex_cache is not None:
            return self.regex_cache.literals(pattern.pattern, pattern.flags)
        return required_literals(pattern.pattern, pattern.flags)

    def _regex(self, name: str, expr: str, multiline: bool = False):
        try:
            pattern, flags = parse_match(expr)
        except PerlRegexError as exc:
            raise PerlRegexError(f"regex: {exc}") from None
        if multiline and "m" not in flags:
            flags += "m"
        if name in self.replace_rules:
            pattern = self._replace_tags(pattern)
        try:
            return compile_pattern(pattern, flags.replace("g", "").replace("o", ""),
                                   cache=self.regex_cache)
        except PerlRegexError as exc:
            raise PerlRegexError(f"regex: {exc}") from None

    def _replace_tags(self, pattern: str) -> str:
        settings = {"pre": "", "inter": "", "post": ""}
        for m in _TAG_DIRECTIVE.finditer(pattern):
            settings[m.group(1)] = self.replace_tags.get(m.group(2), "")
        pattern = _TAG_DIRECTIVE.sub("", pattern)

        def run(m: re.Match) -> str:
            tags = re.findall(r"<([A-Za-z0-9_]+)>", m.group(0))
            if not all(t in self.replace_tags and self.replace_kinds.get(t) == "tag"
                       for t in tags):
                return m.group(0)
            pieces = [settings["pre"] + "(?:" + self.replace_tags[t] + ")" + settings["post"]
                      for t in tags]
            return settings["inter"].join(pieces)

        return _TAG_RUN.sub(run, pattern)


def _name_and_rest(text: str) -> tuple[str, str]:
    """`NAME<spaces or tabs>rest` → (NAME, rest)."""
    parts = text.split(None, 1)
    if not parts:
        raise ValueError("missing name")
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def _strip_comment(line: str) -> str:
    if "#" in line:
        line = re.sub(r"(?<!\\)#.*$", "", line).replace("\\#", "#")
    return line.strip()


def _can(name: str) -> bool:
    """`if can(...)`: we claim SpamAssassin 4's features, not its compatibility shims."""
    short = name.rsplit("::", 1)[-1]
    return short.startswith(("feature_", "has_", "perl_min_version"))


_ARG = re.compile(r"""\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([^,\s]+))\s*(,|$)""")


def _eval_args(text: str) -> tuple:
    """Perl argument list: 'single' (only \\ and \' are escapes), "double", numbers, words."""
    args: list = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ARG.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"syntax: bad eval arguments {text[:60]!r}")
        if m.group(1) is not None:
            args.append(re.sub(r"\\([\\'])", r"\1", m.group(1)))
        elif m.group(2) is not None:
            args.append(re.sub(r'\\(["\\])', r"\1", m.group(2)))
        else:
            word = m.group(3)
            try:
                args.append(int(word))
            except ValueError:
                try:
                    args.append(float(word))
                except ValueError:
                    args.append(word)
        pos = m.end()
    return tuple(args)


MAX_MULTIPLE = 20          # hits counted for `tflags multiple` without maxhits


def rule_cost(rule: Rule) -> float:
    """A rough estimate of what evaluating one non-meta rule costs (arbitrary units)."""
    if rule.pattern is None:
        return 0.2 if rule.exists else 3.0
    if rule.kind in ("body", "rawbody", "full"):
        if rule.literals:
            return 1.0
        return 10.0 + len(rule.pattern.pattern) / 20.0
    if rule.kind == "header":
        return 0.5 if rule.literals else 1.0
    return 2.0


def rule_bound(rule: Rule | None) -> int | None:
    """The largest hit count `rule` can have in a scan (None: not known)."""
    if rule is None or rule.kind == "meta" or rule.exists:
        return 1 if rule is not None else 0
    if rule.pattern is None:
        return None                 # eval: functions may return any number
    if "multiple" in rule.tflags and rule.kind in ("body", "rawbody", "full"):
        return rule.maxhits or MAX_MULTIPLE
    return 1


def _lazy_metas(rules: dict[str, Rule]) -> None:
    """Recompile every meta to read its cheapest operands first (see mailyard.spam.meta)."""
    for name, fn in lazy_meta_fns(rules).items():
        rules[name] = replace(rules[name], meta=fn)


def lazy_meta_fns(rules: dict[str, Rule], cost: Callable[[str], float | None] | None = None,
                  chance: Callable[[str], float | None] | None = None) -> dict[str, object]:
    """Every meta compiled to read cheapest-to-decide operands first.

    `cost`/`chance` may give measured figures for non-meta rules (None where unknown; the
    static `rule_cost` estimate, in the same units as measured microseconds / 10, then
    serves).
    """
    costs: dict[str, float] = {}

    def rule_cost_of(name: str) -> float:
        known = costs.get(name)
        if known is not None:
            return known
        rule = rules.get(name)
        if rule is None:
            return 0.0
        if rule.kind != "meta":
            measured = cost(name) if cost is not None else None
            value = measured if measured is not None else rule_cost(rule)
        else:
            costs[name] = 0.0           # a cycle (already skipped) must not recurse forever
            value = sum(rule_cost_of(d) for d in rule.meta_deps)
        costs[name] = value
        return value

    def chance_of(name: str) -> float:
        measured = chance(name) if chance is not None else None
        return measured if measured is not None else 0.1

    def bound(name: str) -> int | None:
        return rule_bound(rules.get(name))

    return {name: compile_meta(rule.meta_text, rule_cost_of, bound, chance_of)[0]
            for name, rule in rules.items() if rule.kind == "meta" and rule.meta_text}


def _meta_order(rules: dict[str, Rule], skipped: dict) -> list[str]:
    metas = {n: r for n, r in rules.items() if r.kind == "meta"}
    order: list[str] = []
    state: dict[str, int] = {}
    for start in metas:
        if state.get(start):
            continue
        stack = [(start, iter(metas[start].meta_deps))]
        state[start] = 1
        path = [start]
        while stack:
            node, deps = stack[-1]
            advanced = False
            for dep in deps:
                if dep in metas:
                    st = state.get(dep, 0)
                    if st == 0:
                        state[dep] = 1
                        stack.append((dep, iter(metas[dep].meta_deps)))
                        path.append(dep)
                        advanced = True
                        break
                    if st == 1:
                        for member in path[path.index(dep):]:
                            skipped[member] = (member, metas[member].where,
                                               f"meta: dependency cycle through {dep}")
            if not advanced:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
    for name in [n for n in order if n in skipped]:
        rules.pop(name, None)
    return [n for n in order if n in rules]
