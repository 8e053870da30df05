"""The lexer/parser/validator: errors name line and column; arbitrary text never crashes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.sieve import SieveCompileError, compile_script
from mailyard.sieve.grammar import MAX_NESTING, parse, tokenize

ERRORS = [
    # (script, line, column, words in the message)
    ("if true {", 1, 10, "missing '}'"),
    ("keep", 1, 5, "expected ';'"),
    ('require "fileinto";\n\nfileinto;', 3, 1, "takes 1 argument"),
    ("keep;\n  frobnicate;", 2, 3, "unknown command"),
    ('if header :is "a" {\n keep;\n}', 1, 15, "takes 2 argument"),
    ('keep :flags "x";', 1, 6, "imap4flags"),
    ('require "nope";', 1, 1, "unsupported extension"),
    ('"string";', 1, 1, "expected a command"),
    ("keep;\n/* never closed", 2, 1, "unterminated /* comment"),
    ('redirect "a@b.c\n\n', 1, 10, "unterminated string"),
    ("require \"reject\";\nreject text:\nno end\n", 2, 8, "unterminated multi-line"),
    ("if size :over 5Q { keep; }", 1, 15, "bad number"),
    ("if size :over 99999999999999999999999 { keep; }", 1, 15, "too large"),
    ("keep;\nelse { keep; }", 2, 1, "without a preceding if"),
    ('keep;\nrequire "fileinto";', 2, 1, "before any other command"),
    ('if header :is :contains "a" "b" { keep; }', 1, 15, "twice"),
    ('if header :comparator "i;klingon" "a" "b" { keep; }', 1, 23, "unknown comparator"),
    (('require "comparator-i;ascii-numeric";\n'
     'if header :contains :comparator "i;ascii-numeric" "a" "b" { keep; }'), 2, 4,
     "does not support :contains"),
    ("if size 5 { keep; }", 1, 4, "needs :over or :under"),
    ("keep; @", 1, 7, "unexpected character"),
    ("stop { keep; }", 1, 1, "takes no block"),
    ("if true;", 1, 1, "needs a block"),
    ('if anyof () { keep; }', 1, 11, "expected a test"),
    ('if header "a" "b" "c" { keep; }', 1, 11, "takes 2 argument"),
]


@pytest.mark.parametrize("script,line,column,words", ERRORS)
def test_error_names_line_and_column(script, line, column, words):
    with pytest.raises(SieveCompileError) as info:
        compile_script(script)
    err = info.value
    assert (err.line, err.column) == (line, column), str(err)
    assert words in err.message
    assert str(err).startswith(f"line {line}, column {column}: ")


def test_comments_strings_and_lists():
    script = compile_script(
        '# hash comment\r\nrequire ["fileinto", /* inline */ "copy"];\r\n'
        'fileinto :copy "quo\\"ted\\\\and\\other";\r\n'
        'if header :contains ["a", "b"] text: # comment after text:\r\nline\r\n..\r\n.\r\n'
        '{ keep; }\r\n')
    fileinto = script.commands[1]
    assert fileinto.positional == ['quo"ted\\andother']
    assert script.commands[2].tests[0].positional == [["a", "b"], ["line\r\n.\r\n"]]
    assert script.required == {"fileinto", "copy"}


def test_numbers_with_quantifiers():
    tokens = tokenize("1K 2m 3G 10")
    assert [t.value for t in tokens[:-1]] == [1024, 2 * 1024 ** 2, 3 * 1024 ** 3, 10]


def test_tags_and_identifiers_are_case_insensitive():
    script = compile_script('IF HEADER :CONTAINS "Subject" "x" { DISCARD; }')
    assert script.commands[0].tests[0].tagged == {"match": "contains"}


def test_nesting_limit_is_a_compile_error():
    deep = "if true { " * (MAX_NESTING + 1) + "keep;" + " }" * (MAX_NESTING + 1)
    with pytest.raises(SieveCompileError, match="nesting"):
        compile_script(deep)
    ok = "if true { " * (MAX_NESTING - 1) + "keep;" + " }" * (MAX_NESTING - 1)
    compile_script(ok)


def test_deep_test_nesting_is_a_compile_error():
    deep = "if " + "not " * 5000 + "true { keep; }"
    with pytest.raises(SieveCompileError):
        compile_script(deep)
    deep = "if " + "anyof(" * 5000 + "true" + ")" * 5000 + " { keep; }"
    with pytest.raises(SieveCompileError):
        compile_script(deep)


def test_nul_in_script():
    with pytest.raises(SieveCompileError) as info:
        compile_script("keep;\n ke\x00ep;")
    assert (info.value.line, info.value.column) == (2, 4)


TOKENS = st.sampled_from([
    "if", "elsif", "else", "require", "keep", "discard", "stop", "fileinto", "header",
    "address", "allof", "anyof", "not", "true", "size", ":is", ":contains", ":matches",
    ":over", ":comparator", '"i;octet"', '"fileinto"', '"x"', '["a","b"]', "[", "]", "(",
    ")", "{", "}", ";", ",", "1K", "text:\n.\n", "#c\n", "/* */", "\n", " ", '"${hex:41}"',
    "vacation", ":days", '"vacation"', "include", "set", '"variables"',
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=40))
def test_fuzz_token_soup_only_raises_compile_errors(tokens):
    try:
        compile_script(" ".join(tokens))
    except SieveCompileError as err:
        assert err.line >= 1 and err.column >= 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text_only_raises_compile_errors(text):
    try:
        compile_script(text)
    except SieveCompileError as err:
        assert err.line >= 1 and err.column >= 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_quoted_strings_round_trip(value):
    quoted = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert parse(f"redirect {quoted};")[0].arguments[0].values == [value]
