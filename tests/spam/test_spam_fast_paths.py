"""The engine's fast paths never change a verdict (regression guard for the spamperf work).

The optimised engine (ASCII-subject regex forms, cost-ordered lazy metas) is compared with the
reference engine (`SpamEngine(optimize=False)`: every regex as written, every meta in Perl's
order) on a small corpus: the rule-data fixtures, hand-written obfuscated/non-ASCII messages,
and — when the shared generator is present — a few generated mixed messages. Per message the
hit sets, the scores and, rule by rule, the ASCII forms' results must be identical.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from mailyard.spam import SpamEngine
from mailyard.spam.asciire import NEVER, ascii_variant
from mailyard.spam.engine import MAX_MULTIPLE, ScanContext, _count, _search
from mailyard.spam.message import ParsedMessage
from mailyard.spam.meta import compile_meta
from mailyard.spam.rules import rule_bound

GENERATOR = Path("/work/shared/bench/bench_pipeline.py")

HANDWRITTEN = [
    ("Subject: your amaz0n account\r\n\r\nDear customer, your Amaz0n acc0unt is l0cked. "
     "Click h3re to rem0ve the l1mit: http://198.51.100.7/x\r\n"),
    ("Subject: =?utf-8?b?0KDQsNGB0L/RgNC+0LTQsNC20LA=?=\r\nContent-Type: text/plain; "
     "charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
     "P\u0430yP\u0430l: v\u00eerify your \u0430ccount \u2014 \u20ac 1.500.000,00 EUR to "
     "your account, cheap v\u00ecagra, ph\u00e4rmacy, million dollars\r\n"),
    ("Subject: hello\r\n\r\nI have your p\u0430ssword. I recorded you with your webcam. "
     "Pay 0.5 BTC to 1BoatSLRHtKNngkdXEeobR76b53LETtpyT within 48 hours or I send the "
     "video.\r\n"),
    ("Subject: loan\r\nContent-Type: text/html\r\n\r\n<html><body><p>G E T &nbsp; C A S H "
     "N O W</p><p>US$ 25,500,000.00 (twenty five million five hundred thousand dollars)"
     "</p><p>V-i-a-g-r-a, C!al!s, X@n@x</p><img src=\"http://bit.ly/a.png\"></body></html>"
     "\r\n"),
    "Subject: plain\r\n\r\nMinutes of the meeting; nothing to see here.\r\n",
]


def corpus(tmp_path_factory) -> list[tuple[str, bytes]]:
    messages = []
    for file in sorted((Path(__file__).parent / "rules").glob("*.txt")):
        for index, chunk in enumerate(file.read_text().split("<!-- NEXT TEST -->\n")):
            lines = chunk.splitlines()
            while lines and (lines[0].startswith(("expect", "facts", "#")) or not lines[0]):
                lines.pop(0)
            messages.append((f"{file.stem}-{index + 1}",
                             ("\r\n".join(lines) + "\r\n").encode("utf-8")))
    header = "Date: Mon, 3 Mar 2025 10:00:00 +0000\r\nFrom: a@example.org\r\nTo: b@example.test\r\n"
    messages += [(f"hand-{i}", (header + m).encode("utf-8")) for i, m in enumerate(HANDWRITTEN)]
    if GENERATOR.exists():
        out = tmp_path_factory.mktemp("gen")
        subprocess.run([sys.executable, str(GENERATOR), "--dump", str(out), "-n", "24"],
                       check=True, capture_output=True)
        messages += [(f.name, f.read_bytes()) for f in sorted(out.glob("*.eml"))]
    return messages


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    return corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(stock_engine) -> SpamEngine:
    return SpamEngine(ruleset=stock_engine.ruleset, autolearn=False, optimize=False)


def test_same_verdicts_with_stock_rules(stock_engine, reference, messages):
    assert stock_engine._ascii, "the ASCII fast path should apply to the stock rules"
    differ = []
    for name, message in messages:
        fast, slow = stock_engine.scan(message), reference.scan(message)
        if (fast.hits, fast.score) != (slow.hits, slow.score):
            differ.append((name, sorted(set(fast.rule_names) ^ set(slow.rule_names))))
    assert differ == []


def test_same_verdicts_with_own_rules(builtin_engine, messages):
    reference = SpamEngine(ruleset=builtin_engine.ruleset, autolearn=False, optimize=False)
    for name, message in messages:
        fast, slow = builtin_engine.scan(message), reference.scan(message)
        assert (name, fast.hits, fast.score) == (name, slow.hits, slow.score)


def test_ascii_forms_match_like_the_originals(stock_engine, messages):
    """Every rule's ASCII form, on every ASCII text of the corpus, finds what the rule finds."""
    checked = 0
    for name, message in messages:
        ctx = ScanContext(stock_engine, ParsedMessage.parse(message), {}, None)
        for kind in ("body", "rawbody", "full"):
            if not ctx.rule_text_ascii(kind):
                continue
            text = ctx.rule_text(kind)[0]
            for rule in stock_engine.ruleset.by_kind(kind):
                if rule.name not in stock_engine._ascii or rule.pattern is None:
                    continue
                fast = stock_engine._ascii[rule.name]
                if "multiple" in rule.tflags:
                    limit = rule.maxhits or MAX_MULTIPLE
                    want = _count(rule.pattern, text, limit)
                    got = 0 if fast is None else _count(fast, text, limit)
                else:
                    want = _search(rule.pattern, text)
                    got = False if fast is None else _search(fast, text)
                assert (name, rule.name, got) == (name, rule.name, want)
                checked += 1
    assert checked > 1000


def test_lazy_metas_agree_with_perl_order(stock_engine):
    """Each stock meta, cost-ordered, has the plain meta's truth value on random hit counts."""
    rules = stock_engine.ruleset.rules
    rnd = random.Random(6)
    metas = [r for r in rules.values() if r.kind == "meta" and r.meta_text]
    assert len(metas) > 300
    for rule in metas:
        plain, _ = compile_meta(rule.meta_text)
        for _ in range(30):
            hits = {}
            for dep in rule.meta_deps:
                bound = rule_bound(rules.get(dep))
                hits[dep] = rnd.choice([0, 0, 1, bound if bound is not None else 3])
            assert (rule.name, bool(rule.meta(hits))) == (rule.name, bool(plain(hits)))


@pytest.mark.parametrize("pattern,flags,ascii_text,other", [
    (r"(?:^|\W)(?:[aA@4]|[\xc3][\xa0-\xa5])m(?:$|\W)", 0, "an am here", "\xc3\xa0m"),
    (r"caf\xe9", 0, None, "caf\xe9"),                                  # NEVER on ASCII
    (r"x(?:\xe9)?y", 0, "xy", "x\xe9y"),
    (r"\x{17f}top", 2, "STOP", "\u017ftop"),       # ſ folds to s under /i: kept
    (r"^foo$", 8, "a\nfoo\nb", "foo"),
    (r"\bthe\b", 2, "THE end", "bathe"),
])
def test_ascii_variant_cases(pattern, flags, ascii_text, other):
    import regex

    from mailyard.spam.perlre import translate

    source = translate(pattern)
    variant = ascii_variant(source, flags)
    original = regex.compile(source, flags)
    if ascii_text is None:
        assert variant == NEVER
        return
    assert variant not in (None, NEVER)
    fast = regex.compile(variant)
    assert bool(fast.search(ascii_text)) == bool(original.search(ascii_text)) is True
    for probe in ("", "xyz", "plain ascii words"):
        assert bool(fast.search(probe)) == bool(original.search(probe))


@pytest.mark.parametrize("pattern,literals,matching", [
    (r"dol+ars", {"lars"}, "DOLLLARS"),
    (r"x{3}yz", {"xxxyz"}, "axxxyz"),
    (r"[Dd][Oo]l{2,4}ar", {"doll"}, "a DOLLLar"),
    (r"(?:a|b)l+are?s?|\bbucks|USD", {"lar", "bucks", "usd"}, "25 usd"),
    (r"ab+c", None, "abbbc"),
])
def test_prefilter_literals_through_repeats(pattern, literals, matching):
    import regex

    from mailyard.spam.prefilter import required_literals

    found = required_literals(pattern, regex.IGNORECASE)
    assert (set(found) if found else None) == literals
    assert regex.search(pattern, matching, regex.IGNORECASE)
    if found:
        assert any(lit in matching.lower() for lit in found)
