"""Comparators and match types (RFC 4790, RFC 5228 §2.7, RFC 5231) against references."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.sieve.match import casemap, glob_match, match_value, numeric, relational


def reference(value: str, pattern: str, flags: int = 0) -> bool:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.fullmatch("".join(out), value, re.DOTALL | flags) is not None


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="abAB?*\\", max_size=10), st.text(alphabet="abAB?*\\", max_size=7))
def test_glob_agrees_with_a_regex_reference(value, pattern):
    got = glob_match(value, pattern, "i;octet")
    assert (got is not None) == reference(value, pattern)
    if got is not None:
        wildcards = len(re.findall(r"\\.|[*?]", pattern)) - len(re.findall(r"\\.", pattern))
        assert got[0] == value and len(got) == 1 + wildcards


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abAB?*", max_size=10), st.text(alphabet="abAB?*", max_size=7))
def test_glob_casemap(value, pattern):
    assert (glob_match(value, pattern, "i;ascii-casemap") is not None) == \
        reference(value, pattern, re.IGNORECASE)


@pytest.mark.parametrize("value,pattern,captures", [
    ("[acme-users] [fwd] version 1.0 is out", "[*] *",
     ["acme-users", "[fwd] version 1.0 is out"]),
    ("Mailing list <coyote@lists.example>", "*<*@*", ["Mailing list ", "coyote",
                                                     "lists.example>"]),
    ("abc", "a?c", ["b"]),
    ("aXbXc", "*X*", ["a", "bXc"]),       # RFC 5229 §3.2: leftmost wildcard shortest
    ("a*b", "a\\*b", []),
])
def test_match_variables(value, pattern, captures):
    assert glob_match(value, pattern, "i;ascii-casemap")[1:] == captures


def test_casemap_folds_ascii_only():
    assert casemap("ÄBC") == "Äbc"
    assert match_value("STRASSE", "strasse", "is", "i;ascii-casemap", None)
    assert not match_value("ÄB", "äb", "is", "i;ascii-casemap", None)
    assert not match_value("Ab", "ab", "is", "i;octet", None)


@pytest.mark.parametrize("value,key,relation,expected", [
    ("10", "9", "gt", True), ("010", "10", "eq", True), ("abc", "99999", "gt", True),
    ("abc", "def", "eq", True),  # both positive infinity
    ("3 apples", "3", "eq", True), ("", "0", "gt", True), ("1", "2", "ne", True),
    ("2", "2", "le", True), ("2", "2", "lt", False),
])
def test_ascii_numeric(value, key, relation, expected):
    assert relational(value, key, relation, "i;ascii-numeric") is expected


def test_numeric_prefix():
    assert numeric("42abc") == 42 and numeric("x42") is None


def test_long_values_with_many_wildcards_stay_fast():
    value = "ab" * 200_000
    assert glob_match(value, "*a?a*c*", "i;octet") is None
    assert glob_match(value, "*" + "b?" * 50 + "*", "i;octet") is not None
