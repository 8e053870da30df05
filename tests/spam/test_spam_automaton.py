"""The Hyperscan prefilter (mailyard.spam.automaton) only ever skips regexes that cannot match.

Rules written to exercise the rewrite (lookarounds, /i /m /s /x, octets of UTF-8 text, \\b,
back-references, constructs Hyperscan cannot take) are scanned by the optimised engine and by
the reference engine (`optimize=False`, no automaton): the verdicts must be identical, and
rule by rule every miss the automaton claims must be a real miss. A hypothesis fuzz checks the
superset property on arbitrary octet text.
"""

from __future__ import annotations

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.spam import SpamEngine
from mailyard.spam import automaton as automaton_module
from mailyard.spam.engine import MAX_MULTIPLE, ScanContext, _search
from mailyard.spam.hsre import NEVER, superset_expression
from mailyard.spam.message import ParsedMessage

pytest.importorskip("hyperscan")

RULES = r"""
body     LOOKAHEAD     /price(?=\s*\$\d)/i
body     LOOKBEHIND    /(?<!no )refund/
body     NEG_AHEAD     /deal(?! off)/
body     CASELESS      /v[i1]agra/i
body     MULTILINE     /^subject line$/m
body     DOTALL        /start.+end/s
body     XFLAG         / c h e a p \s+ p i l l s /x
body     OCTETS        /caf\xc3\xa9/
body     OCTETS_I      /\xc3\x89t\xc3\x89/i
body     BOUNDARY      /\bwin\b/
body     BACKREF       /(\w)\1\1\1/
body     CONDITIONAL   /(a)?(?(1)b|c)dd/
body     POSIX         /[[:digit:]]{5}/
body     EMPTYISH      /x*/
body     WIDE_CHAR     /\x{263a}/
body     ATOMIC        /(?>ab+)c/
body     POSSESSIVE    /qa++b/
body     LAZY          /<.+?>/
body     BIGREPEAT     /a{2,200}z/
body     SCOPED        /(?i:shout)quiet/
body     UNICODE_WORD  /\w{3}\xa9/
rawbody  RAW           /<b>bold/i
full     FULL          /^X-Test: yes/m
uri      URI_HOST      /^https?:\/\/[^\/]*\.example\.com\//i
uri      URI_END       /\.test$/
header   HDR           Subject =~ /\bfree\b/i
header   HDR_NEG       Subject !~ /hello/
header   HDR_UNSET     X-Missing =~ /^unset$/ [if-unset: unset]
header   HDR_ADDR      From:addr =~ /\@example\.org$/
header   HDR_ALL       ALL =~ /^X-Mailer: spammer/m
tflags   BIGREPEAT     multiple
body     __COUNT_E     /e/
tflags   __COUNT_E     multiple maxhits=7
body     __COUNT_EE    /(?:ee)/
tflags   __COUNT_EE    multiple
meta     MANY_E        __COUNT_E > 6 && __COUNT_EE < 3
meta     FEW_E         __COUNT_E > 1 && __COUNT_E < 7
meta     __NO_WORDS    !BOUNDARY && !CASELESS
meta     QUIET_MAIL    __NO_WORDS && !HDR_NEG
meta     LOUD_MAIL     (BOUNDARY || OCTETS) && HDR
"""

HEAD = "From: A <a@example.org>\r\nTo: b@example.test\r\nSubject: {subject}\r\n{extra}"

MESSAGES = [
    ("Free stuff", "X-Test: yes\r\nX-Mailer: spammer 1\r\n",
     "Price $5 for viagra!\r\n\r\nsubject line\r\n\r\nstart\r\nand end. cheap  pills\r\n"
     "a refund, the deal, win big, aaaa, abbc, qaab, <tag>, aaaz aaaaz, SHOUTquiet\r\n"
     "<b>BOLD</b> http://www.example.com/x http://host.test\r\n"),
    ("hello", "", "no refund, deal off, price later, window, abc, cdd, 12345 xx\r\n"),
    ("caf\u00e9", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
     "8bit\r\n", "Caf\u00e9 \u00c9t\u00c9 \u00e9t\u00e9 d\u00e9j\u00e0 vu \u263a V1AGRA "
     "abc\u00a9 xyz\r\n"),
    ("nothing", "", "Minutes of the meeting.\r\n"),
    ("es", "", "See three trees: eerie geese here.\r\n"),
]


def message(subject: str, extra: str, body: str) -> bytes:
    return (HEAD.format(subject=subject, extra=extra) + "\r\n" + body).encode("utf-8")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    rules = tmp_path_factory.mktemp("rules")
    (rules / "50_test.cf").write_text(RULES)
    cache = tmp_path_factory.mktemp("cache")
    fast = SpamEngine(rules_dirs=[rules], builtin_rules=False, autolearn=False,
                      automaton_cache=cache)
    slow = SpamEngine(ruleset=fast.ruleset, autolearn=False, optimize=False)
    return fast, slow, cache


def exact(engine: SpamEngine, ctx: ScanContext, rule) -> int:
    if rule.kind == "header":
        return engine._header_rule(ctx, rule)
    if rule.kind == "uri":
        return int(any(_search(rule.pattern, u) for u in ctx.rule_uris()))
    return int(_search(rule.pattern, ctx.rule_text(rule.kind)[0]))


def test_what_is_gated(engines):
    fast, slow, _ = engines
    assert slow._automaton is None
    automaton = fast._automaton
    assert automaton is not None
    gated = set().union(*automaton.gated.values())
    for name in ("LOOKAHEAD", "LOOKBEHIND", "CASELESS", "MULTILINE", "DOTALL", "XFLAG",
                 "OCTETS", "OCTETS_I", "BOUNDARY", "BACKREF", "ATOMIC", "LAZY", "BIGREPEAT",
                 "RAW", "FULL", "URI_HOST", "URI_END", "HDR", "HDR_NEG", "HDR_UNSET",
                 "HDR_ADDR", "HDR_ALL", "WIDE_CHAR"):
        assert name in gated, name
    for name in ("CONDITIONAL", "POSIX", "EMPTYISH"):   # always run their regex
        assert name not in gated, name
    assert "WIDE_CHAR" in automaton.never["body"]       # no octet text holds U+263A


def test_same_verdicts_and_real_misses(engines):
    fast, slow, _ = engines
    hit_somewhere = set()
    for subject, extra, body in MESSAGES:
        raw = message(subject, extra, body)
        a, b = fast.scan(raw), slow.scan(raw)
        assert (subject, a.hits, a.score) == (subject, b.hits, b.score)
        hit_somewhere |= set(a.rule_names)
        ctx = ScanContext(fast, ParsedMessage.parse(raw), {}, None)
        misses = fast._automaton.misses(ctx)
        assert misses
        for name, value in misses.items():
            assert (subject, name, exact(fast, ctx, fast.ruleset.rules[name])) == \
                (subject, name, value)
    # the messages really exercise the rules (hits as well as misses)
    assert {"LOOKAHEAD", "LOOKBEHIND", "NEG_AHEAD", "CASELESS", "MULTILINE", "DOTALL",
            "XFLAG", "OCTETS", "OCTETS_I", "BOUNDARY", "BACKREF", "ATOMIC", "POSSESSIVE",
            "LAZY", "BIGREPEAT", "SCOPED", "UNICODE_WORD", "RAW", "FULL", "URI_HOST",
            "URI_END", "HDR", "HDR_NEG", "HDR_UNSET", "HDR_ADDR", "HDR_ALL",
            "CONDITIONAL", "POSIX", "MANY_E", "FEW_E", "QUIET_MAIL", "LOUD_MAIL"} <= hit_somewhere


def test_metas_decided_from_known_zeros(engines):
    """Metas that are 0 when all their operands are 0 are the ones decided early; `!X` isn't."""
    fast, _, _ = engines
    decidable = {name for name, _ in fast._meta_zero}
    assert {"MANY_E", "FEW_E", "LOUD_MAIL", "QUIET_MAIL"} <= decidable
    assert "__NO_WORDS" not in decidable    # 1 when its operands are 0: always evaluated


def test_literal_counts_are_the_regex_counts(engines):
    fast, _, _ = engines
    assert set(fast._count_literals.values()) == {"e", "ee"}
    for text in ("", "e", "eee", "eeeee e", "xeex" * 9, "\xe9e\xc3\xa9e"):
        for name in ("__COUNT_E", "__COUNT_EE"):
            rule = fast.ruleset.rules[name]
            want = min(len(rule.pattern.findall(text)), rule.maxhits or MAX_MULTIPLE)
            literal = fast._count_literals[id(rule.pattern)]
            assert min(text.count(literal), rule.maxhits or MAX_MULTIPLE) == want


OCTET_TEXT = st.text(alphabet=st.sampled_from(
    list("abcdeqtwinzxAVIGR1$ <>/.-\n") + ["\xc3", "\xa9", "\x89", "\xe9", "\xa0", "\x85",
                                            "\xb5", "\xff", "\t"]), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=OCTET_TEXT)
def test_superset_on_arbitrary_octets(engines, text):
    fast, _, _ = engines
    automaton = fast._automaton
    for kind in ("body", "rawbody", "full"):
        for name in automaton.silent(kind, text):
            rule = fast.ruleset.rules[name]
            assert not rule.pattern.search(text), (name, text)


@pytest.mark.parametrize("pattern,flags", [
    (r"\bfoo\b", 0), (r"(?i)straße", 0), (r"[^a-z]{3}", regex.I), (r"a.c", 0),
    (r"a.c", regex.S), (r"(?<=x)y", 0), (r"(a|b)\1", 0), (r"\d\s\w\W\S\D", 0),
    (r"k", regex.I), (r"s", regex.I),
])
def test_rewrite_is_a_superset_octet_by_octet(pattern, flags):
    """Every single-octet class of the rewrite holds whatever the original's item matches."""
    expression = superset_expression(pattern, flags)
    assert expression not in (None, NEVER)
    original = regex.compile(pattern, flags)
    rewritten = regex.compile(expression.encode("latin-1"), regex.DOTALL)
    for a in range(256):
        for b in (0x20, 0x61, 0x78, 0xe9):
            text = "x" + chr(a) + chr(b) + "c" + chr(a) + "y"
            if original.search(text):
                assert rewritten.search(text.encode("latin-1")), (pattern, text)


def test_engine_without_hyperscan_runs_every_regex(engines, monkeypatch):
    fast, _, _ = engines
    monkeypatch.setattr(automaton_module, "hyperscan", None)
    plain = SpamEngine(ruleset=fast.ruleset, autolearn=False)
    assert plain._automaton is None
    for subject, extra, body in MESSAGES:
        raw = message(subject, extra, body)
        assert plain.scan(raw).hits == fast.scan(raw).hits


def test_compiled_databases_are_cached_and_a_broken_cache_is_rebuilt(engines):
    fast, _, cache = engines
    files = list(cache.glob("spam-automaton-*.hs"))
    assert len(files) == 1
    again = SpamEngine(ruleset=fast.ruleset, autolearn=False, automaton_cache=cache)
    assert again._automaton.gated == fast._automaton.gated
    files[0].write_bytes(b"not a pickle")
    rebuilt = SpamEngine(ruleset=fast.ruleset, autolearn=False, automaton_cache=cache)
    assert rebuilt._automaton.gated == fast._automaton.gated
    raw = message(*MESSAGES[0])
    assert rebuilt.scan(raw).hits == fast.scan(raw).hits


def test_stock_rules_misses_are_real_misses(stock_engine):
    """Rule by rule on the hand-written and fixture mail: each claimed miss is a miss."""
    from test_spam_fast_paths import HANDWRITTEN

    automaton = stock_engine._automaton
    assert automaton is not None
    assert len(automaton.gated["body"]) > 400 and len(automaton.gated["header"]) > 400
    checked = 0
    header = "Date: Mon, 3 Mar 2025 10:00:00 +0000\r\nFrom: a@example.org\r\nTo: b@ex.test\r\n"
    for text in HANDWRITTEN + [body for _, _, body in MESSAGES]:
        raw = (header + "Subject: x\r\n\r\n" + text if not text.startswith("Subject")
               else header + text).encode("utf-8")
        ctx = ScanContext(stock_engine, ParsedMessage.parse(raw), {}, None)
        for name, value in automaton.misses(ctx).items():
            rule = stock_engine.ruleset.rules[name]
            assert (name, exact(stock_engine, ctx, rule)) == (name, value)
            checked += 1
    assert checked > 5000
