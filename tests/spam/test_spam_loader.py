"""The .cf loader, Perl regex translation and meta expressions."""

from __future__ import annotations

import pytest
import regex

from mailyard.spam import SpamEngine
from mailyard.spam.meta import MetaError, compile_meta
from mailyard.spam.perlre import PerlRegexError, compile_perl, parse_match
from mailyard.spam.rules import RuleLoader


@pytest.mark.parametrize("perl,text,hit", [
    (r"/foo/i", "FOO", True),
    (r"m{^https?://bit\.ly/}i", "http://bit.ly/x", True),
    (r"m{a{2,3}}", "aaa", True),               # braces nest inside m{}
    (r"m!a/b!", "a/b", True),
    (r"/\x{263a}/", "smile \u263a", True),
    (r"/(?<w>ab)\k<w>/", "abab", True),
    (r"/end\Z/", "the end\n", True),           # Perl \Z: before a final newline
    (r"/end\z/", "the end\n", False),          # Perl \z: the very end
    (r"/\Qa.b\E/", "axb", False),
    (r"/\Qa.b\E/", "a.b", True),
    (r"/\y/", "y", True),                      # unknown escape: Perl's literal
    (r"/\h+x/", " \tx", True),
    (r"/[\v]/", "\x0b", True),
    (r"/a\/b/", "a/b", True),
    (r"/ a b # comment\n/x", "ab", True),
])
def test_perl_regex_translation(perl, text, hit):
    assert bool(compile_perl(perl.replace("\\n", "\n")).search(text)) is hit


@pytest.mark.parametrize("bad", ["/unterminated", "/a/q", "/(/", "noslash", "/a{2,1}/"])
def test_perl_regex_errors_are_reported(bad):
    with pytest.raises(PerlRegexError):
        compile_perl(bad)


def test_parse_match_flags():
    assert parse_match("m{x}is") == ("x", "is")


@pytest.mark.parametrize("expr,hits,value", [
    ("A && B", {"A": 1, "B": 1}, True),
    ("A && !B", {"A": 1, "B": 1}, False),
    ("!A + B", {"A": 0, "B": 1}, True),        # Perl: (!A) + B, not !(A + B)
    ("(A + B + C) > 1", {"A": 1, "C": 1}, True),
    ("A || UNKNOWN", {}, False),               # unknown rules count 0
    ("A * 2 >= 2 && B == 0", {"A": 1}, True),
    ("A / B", {"A": 1}, False),                # division by zero is 0, not an error
    ("A ? B : C", {"A": 0, "C": 1}, True),
])
def test_meta_expressions(expr, hits, value):
    fn, _deps = compile_meta(expr)
    assert bool(fn(hits)) is value


@pytest.mark.parametrize("bad", ["A &&", "(A", "A B", "A $ B", ""])
def test_meta_errors(bad):
    with pytest.raises(MetaError):
        compile_meta(bad)


def _load(text: str, tmp_path=None):
    loader = RuleLoader()
    loader.load_text(text, "test.cf")
    return loader.finish()


def test_conditionals_and_plugins():
    rs = _load("""
ifplugin Mail::SpamAssassin::Plugin::NoSuchThing
body IN_MISSING_PLUGIN /x/
endif
ifplugin Mail::SpamAssassin::Plugin::HeaderEval
body IN_PLUGIN /x/
else
body IN_ELSE /x/
endif
if (version >= 3.004000)
body NEW_ENOUGH /x/
endif
if !plugin(Mail::SpamAssassin::Plugin::BodyEval)
body NO_BODYEVAL /x/
endif
if can(Mail::SpamAssassin::Conf::feature_bug6558_free)
body HAS_FEATURE /x/
endif
""")
    assert {"IN_PLUGIN", "NEW_ENOUGH", "HAS_FEATURE"} <= set(rs.rules)
    assert not {"IN_MISSING_PLUGIN", "IN_ELSE", "NO_BODYEVAL"} & set(rs.rules)
    reasons = {name: reason for name, _, reason in rs.skipped}
    assert reasons["IN_MISSING_PLUGIN"] == "needs plugin NoSuchThing"


def test_bad_rule_is_reported_with_file_and_line_and_skipped():
    rs = _load("body GOOD /ok/\nbody BAD /(unclosed/\nmeta BADMETA GOOD &&\n"
               "body EVIL eval:no_such_function()\n")
    assert "GOOD" in rs.rules
    where = {name: (loc, reason) for name, loc, reason in rs.skipped}
    assert where["BAD"][0] == "test.cf:2" and where["BAD"][1].startswith("regex")
    assert where["BADMETA"][0] == "test.cf:3"
    assert where["EVIL"][1] == "unsupported eval: no_such_function"


def test_scores_describe_tflags_and_redefinition():
    rs = _load("body A /a/\nbody A /b/\nscore A 1 2 3 4\ndescribe A It is A\n"
               "body N /n/\ntflags N nice multiple maxhits=3\nbody __SUB /s/\n"
               "required_score 6.5\n")
    assert rs.rules["A"].pattern.pattern == "b"      # the later definition wins
    assert [rs.score("A", i) for i in range(4)] == [1, 2, 3, 4]
    assert rs.descriptions["A"] == "It is A"
    assert rs.score("N", 0) == -1.0 and rs.rules["N"].maxhits == 3
    assert rs.score("__SUB", 0) == 0
    assert rs.required_score == 6.5


def test_replace_tags():
    rs = _load("replace_tag V (?:v|\\\\/)\nreplace_tag I (?:i|1|!)\nreplace_inter W1 \\W?\n"
               "body FUZZY /<inter W1><V><I>agra/i\nreplace_rules FUZZY\n")
    pat = rs.rules["FUZZY"].pattern
    assert pat.search("buy v.1agra") and pat.search("VIAGRA") and not pat.search("viagr")


def test_meta_cycle_is_skipped():
    rs = _load("meta A B\nmeta B A\nmeta C 1\n")
    assert "C" in rs.rules and "A" not in rs.rules and "B" not in rs.rules


def test_include(tmp_path):
    (tmp_path / "inc.cf").write_text("body FROM_INCLUDE /x/\n")
    (tmp_path / "main.cf").write_text("include inc.cf\nbody MAIN /y/\n")
    loader = RuleLoader()
    loader.load_dir(tmp_path)
    rs = loader.finish()
    assert {"FROM_INCLUDE", "MAIN"} <= set(rs.rules)


def test_header_rule_forms(tmp_path):
    (tmp_path / "h.cf").write_text(r"""
header SUBJ_X      Subject =~ /hello/i
header NOT_SUBJ    Subject !~ /Hello/
header FROM_ADDR   From:addr =~ /^bob\@example\.test$/
header FROM_NAME   From:name =~ /^Bob Builder$/
header RAW_SUBJ    Subject:raw =~ /=\?utf-8\?/i
header HAS_XF      exists:X-Foo
header TOCC        ToCc =~ /carol/
header UNSET_DFLT  X-Missing =~ /default/ [if-unset: default value]
header ALLH        ALL =~ /^X-Foo: bar/m
""")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    msg = (b"From: Bob Builder <bob@example.test>\r\nTo: a@example.test\r\n"
           b"Cc: carol@example.test\r\nX-Foo: bar\r\n"
           b"Subject: =?utf-8?q?Hello_there?=\r\n\r\nbody\r\n")
    hits = set(engine.scan(msg).rule_names)
    assert hits == {"SUBJ_X", "FROM_ADDR", "FROM_NAME", "RAW_SUBJ", "HAS_XF", "TOCC",
                    "UNSET_DFLT", "ALLH"}


def test_body_rawbody_full_uri_mimeheader(tmp_path):
    (tmp_path / "b.cf").write_text(r"""
body    BODY_TEXT    /visible words here/
body    BODY_NO_TAGS /<b>/
rawbody RAW_TAGS     /<b>visible/
full    FULL_HDR     /^X-Trace: 42$/m
uri     URI_HOST     m{^https?://shop\.example/}
mimeheader MIME_PDF  Content-Type =~ /application\/pdf/
body    MULTI        /word/
tflags  MULTI        multiple maxhits=2
""")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    msg = (b"X-Trace: 42\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
           b"\r\n--b\r\nContent-Type: text/html\r\n\r\n"
           b"<p><b>visible</b> words here word word word <a href='https://shop.example/x'>x</a>"
           b"</p>\r\n--b\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n--b--\r\n")
    verdict = engine.scan(msg)
    hits = {h.name: h.score for h in verdict.hits}
    assert set(hits) == {"BODY_TEXT", "RAW_TAGS", "FULL_HDR", "URI_HOST", "MIME_PDF", "MULTI"}
    assert hits["MULTI"] == 2.0   # tflags multiple: each hit scores, up to maxhits


def test_stock_spamassassin_ruleset_loads(stock_engine):
    report = stock_engine.ruleset.report()
    assert report["loaded"] > 2000
    # everything skipped has a reason; no regex of the stock set is lost
    assert all(reason for _, _, reason in stock_engine.ruleset.skipped)
    assert "regex does not compile" not in report["skipped_by_reason"]


def test_stock_ruleset_scans_gtube(stock_engine):
    msg = (b"Subject: test\r\nFrom: a@example.org\r\n\r\n"
           b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
    verdict = stock_engine.scan(msg)
    assert verdict.is_spam and "GTUBE" in verdict.rule_names


def test_regex_timeout_is_a_miss_not_a_hang(tmp_path):
    (tmp_path / "slow.cf").write_text("body CATASTROPHIC /^(a+)+$/\n")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    verdict = engine.scan(b"Subject: x\r\n\r\n" + b"a" * 5000 + b"!\r\n")
    assert "CATASTROPHIC" not in verdict.rule_names
    assert isinstance(regex.compile("x"), regex.Pattern)


def test_regex_cache_replays_compiled_rules(tmp_path):
    from mailyard.spam.regexcache import CompiledCache

    (tmp_path / "r.cf").write_text("body CACHED_A /cheap (?:pills|meds)/i\n"
                                   "header CACHED_B Subject =~ /^hello\\b/\n")
    cache = tmp_path / "spam-regex.cache"
    msg = b"Subject: hello there\r\n\r\nCheap meds here\r\n"
    first = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False, regex_cache=cache)
    assert cache.exists()
    second = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False, regex_cache=cache)
    assert first.scan(msg).rule_names == second.scan(msg).rule_names == ["CACHED_A", "CACHED_B"]
    assert second.ruleset.rules["CACHED_A"].literals == frozenset({"cheap "})
    replay = CompiledCache(cache)
    # body rules compile with /i from the rule plus /m (paragraph anchors): 2 | 8
    assert replay.compile("cheap (?:pills|meds)", 2 | 8).search("CHEAP PILLS")
    assert replay.hits == 1
    cache.write_bytes(b"garbage")                      # a broken cache is only slower
    third = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False, regex_cache=cache)
    assert third.scan(msg).rule_names == ["CACHED_A", "CACHED_B"]


def test_tabs_separate_names_from_values():
    # regression: `tflags NAME<TAB>nice` once made the whole line the rule name, so a nice
    # rule without a score line scored +1.0 instead of -1.0
    rs = _load("meta\tLIST_RULE\t1\ntflags\tLIST_RULE\tnice\ndescribe\tLIST_RULE\tA list\n"
               "replace_tag\tX\t(?:x|%)\nbody\tTAGGED\t/a<X>b/\nreplace_rules\tTAGGED\n")
    assert rs.score("LIST_RULE", 0) == -1.0
    assert rs.descriptions["LIST_RULE"] == "A list"
    assert rs.rules["TAGGED"].pattern.search("a%b")


def test_meta_over_a_missing_rule_is_skipped():
    # regression: `A && !__UNSUPPORTED` fired on ham when __UNSUPPORTED (an eval we lack)
    # silently read as 0; SpamAssassin disables such metas, and so do we, transitively
    rs = _load("body A /a/\nheader __UNSUP eval:no_such_eval()\nmeta M1 A && !__UNSUP\n"
               "meta M2 M1 || A\nmeta M3 A && !NEVER_DEFINED\nmeta OK A\n")
    assert set(rs.rules) == {"A", "OK"}
    reasons = {n: r for n, _, r in rs.skipped}
    assert reasons["M2"] == "meta: depends on missing M1"


def test_freemail_shortener_and_subject_evals(tmp_path):
    (tmp_path / "f.cf").write_text(
        "freemail_domains gmail.com yahoo.*\nurl_shortener .page.link tiny.example\n"
        "header FM_FROM eval:check_freemail_from()\n"
        "header FM_REPLY eval:check_freemail_replyto('replyto')\n"
        "body SHORT eval:short_url()\n"
        "header USER_IN_SUBJ eval:check_for_to_in_subject('user')\n"
        "header ENV_MATCH eval:check_for_matching_env_and_hdr_from()\n")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    msg = (b"From: corp@bank.example\r\nReply-To: someone@yahoo.co.uk\r\n"
           b"To: alice@example.test\r\nSubject: alice, your account\r\n\r\n"
           b"see https://x.page.link/abc\r\n")
    # a freemail Reply-To alone is no hit (FreeMail wants a different freemail From or body
    # address: see test_spam_sa_parity)
    assert set(engine.scan(msg).rule_names) == {"SHORT", "USER_IN_SUBJ"}
    msg2 = b"From: bob@gmail.com\r\nTo: c@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
    assert engine.scan(msg2, facts={"envelope_from": "bob@gmail.com"}).rule_names == \
        ["ENV_MATCH", "FM_FROM"]


def test_our_bayes_scores_win_over_imported_rules(tmp_path):
    (tmp_path / "other.cf").write_text("body BAYES_99 eval:check_bayes('0.99', '1.00')\n"
                                       "score BAYES_99 0 0 0.5 0.5\n")
    engine = SpamEngine(rules_dirs=[tmp_path])
    assert engine.ruleset.score("BAYES_99", 2) == 4.0


def test_own_rule_yields_to_a_loaded_rule_scoring_the_same_signal(tmp_path):
    """`yield_to OURS THEIRS...`: OURS scores nothing once one of THEIRS is loaded (a metas
    still reads it); without them it keeps its score. Ours fill in where stock rules are
    absent, and a signal both score counts once."""
    own = ("body OURS /cheap pills/\nscore OURS 2.0\nyield_to OURS THEIRS OTHER\n"
           "meta OURS_META OURS\nscore OURS_META 0.5\n")
    alone = _load(own)
    assert alone.score("OURS", 2) == 2.0
    both = _load(own + "body THEIRS /pills/\nscore THEIRS 1.0\n")
    assert both.score("OURS", 2) == 0.0 and both.score("THEIRS", 2) == 1.0
    assert "OURS" in both.rules
    # a named rule that did not load (skipped) does not take the signal over
    skipped = _load(own + "body OTHER eval:no_such_eval()\n")
    assert skipped.score("OURS", 2) == 2.0
    engine = SpamEngine(ruleset=both, builtin_rules=False)
    verdict = engine.scan(b"Subject: x\r\n\r\ncheap pills here\r\n")
    assert {h.name: h.score for h in verdict.hits} == {"THEIRS": 1.0, "OURS_META": 0.5}
    assert _load("yield_to LONELY\n").ignored["bad yield_to"] == 1


def test_if_with_a_leading_negation_of_a_parenthesised_condition():
    """Regression: `if !(!plugin(X))` compiled to ' not (False)' (leading space) and failed."""
    rs = _load("""
if !(!plugin(Mail::SpamAssassin::Plugin::DKIM))
body DOUBLE_NEGATION /x/
endif
if !(plugin(Mail::SpamAssassin::Plugin::DKIM))
body NEGATED_PLUGIN /x/
endif
""")
    assert "DOUBLE_NEGATION" in rs.rules
    assert "NEGATED_PLUGIN" not in rs.rules


def test_body_anchors_match_at_each_paragraph(tmp_path):
    """Regression: ^ in a body rule only matched the start of the whole body (the Subject)."""
    (tmp_path / "r.cf").write_text("body DEAR_FRIEND /^dear friend/i\n"
                                   "body LINES /^\\s*\\S/\ntflags LINES multiple maxhits=3\n"
                                   "meta FEW_LINES LINES < 3\n")
    engine = SpamEngine(rules_dirs=[tmp_path], builtin_rules=False)
    msg = b"Subject: hello\r\n\r\nFirst paragraph.\r\n\r\nDear friend, hi.\r\n\r\nBye.\r\n"
    assert engine.scan(msg).rule_names == ["DEAR_FRIEND", "LINES"]
    near = b"Subject: hello\r\n\r\nMy dear friend, hi.\r\n"
    assert engine.scan(near).rule_names == ["FEW_LINES", "LINES"]
