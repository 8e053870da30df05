"""Every signature syntax element: a matching sample and a near miss (table in sigcases)."""

from __future__ import annotations

import pytest
from av_samples import write_db
from hypothesis import given, settings
from hypothesis import strategies as st
from sigcases import CASES, case_name, database_files

from mailyard.antivirus import ScanOptions, VirusEngine, hexsig
from mailyard.antivirus.logical import ExpressionError, check_expression

ALL = ScanOptions(allmatch=True)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    db = write_db(tmp_path_factory.mktemp("sigdb"), database_files())
    engine = VirusEngine(db)
    assert engine.errors == []
    return engine


@pytest.mark.parametrize("ext,line,match,near_miss", CASES, ids=[case_name(c[1]) for c in CASES])
def test_signature_element(engine, ext, line, match, near_miss):
    name = case_name(line) + ".UNOFFICIAL"
    assert name in engine.scan_bytes(match, options=ALL).names
    assert name not in engine.scan_bytes(near_miss, options=ALL).names


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("4142zz", "bad hex byte"),
    ("414", "odd number"),
    ("*414243", "start or end with a jump"),
    ("414243{3}", "start or end with a jump"),
    ("4142{x}4344", "bad jump"),
    ("4142{5-2}4344", "bad jump"),
    ("41(42|43", "unclosed"),
    ("41(|43)44", "empty alternative"),
    ("41!(4243|44)45", "single bytes"),
    ("????", "fixed byte"),
    ("41)42", "unexpected"),
])
def test_hex_signature_errors(text, reason):
    with pytest.raises(hexsig.SignatureError, match=reason):
        hexsig.parse(text)


@pytest.mark.parametrize("expression,count", [
    ("", 1), ("0&", 2), ("0&2", 2), ("(0|1", 2), ("0>x", 1), ("0&&1", 2), ("a", 1),
])
def test_logical_expression_errors(expression, count):
    with pytest.raises(ExpressionError):
        check_expression(expression, count)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF?*{}-()|!,", max_size=40))
def test_hex_parser_fuzz_raises_only_signature_error(text):
    try:
        tokens = hexsig.parse(text)
    except hexsig.SignatureError:
        return
    # Whatever parses must emit both forms without error.
    hexsig.to_yara_regex(tokens)
    if not hexsig.needs_regex(tokens):
        hexsig.to_yara_hex(tokens)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789&|()=<>, ", max_size=30))
def test_logical_parser_fuzz(expression):
    try:
        check_expression(expression, 10)
    except ExpressionError:
        pass
