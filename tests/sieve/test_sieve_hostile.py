"""Hostile scripts and messages: every limit ends the run cleanly and keeps the message."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.sieve import (
    Keep,
    Limits,
    SieveCompileError,
    SieveContext,
    SieveEnvelope,
    compile_script,
    run,
)

MESSAGE = b"From: a@b.test\r\nTo: me@x.test\r\nSubject: hello\r\n\r\nbody\r\n"
ENVELOPE = SieveEnvelope(sender="a@b.test", recipient="me@x.test")


class Includes(SieveContext):
    def __init__(self, scripts: dict[str, str], **kwargs):
        super().__init__(**kwargs)
        self.scripts = scripts

    def load_include(self, name, location):
        return self.scripts.get(name)


def assert_kept_with_error(result, words: str):
    assert result.actions == []
    assert result.implicit_keep == Keep("INBOX")
    assert result.errors and words in result.errors[0], result.errors


def test_thousands_of_actions_hit_the_action_limit():
    body = "".join(f'fileinto "box{i}";\n' for i in range(5000))
    script = compile_script('require "fileinto";\n' + body)
    assert_kept_with_error(run(script, MESSAGE, ENVELOPE), "too many actions")


def test_redirect_limit():
    body = "".join(f'redirect "u{i}@example.net";\n' for i in range(10))
    result = run(compile_script(body), MESSAGE, ENVELOPE, SieveContext(
        limits=Limits(max_redirects=3)))
    assert_kept_with_error(result, "too many redirects")


def test_repeated_redirect_to_one_address_counts_once():
    result = run(compile_script('redirect "a@x.test";\n' * 10), MESSAGE, ENVELOPE)
    assert len(result.actions) == 1 and not result.errors


def test_include_recursion_through_two_scripts():
    ctx = Includes({"a": 'require "include"; include "b";',
                    "b": 'require "include"; include "a";'})
    result = run(compile_script('require "include"; include "a";'), MESSAGE, ENVELOPE, ctx)
    assert_kept_with_error(result, "recursion")


def test_include_fan_out_bomb_hits_the_include_limit():
    # Each level includes the next one twice: 2**12 runs without a limit.
    scripts = {f"l{i}": f'require "include"; include "l{i + 1}"; include "l{i + 1}";'
               for i in range(12)}
    scripts["l12"] = "keep;"
    result = run(compile_script('require "include"; include "l0";'), MESSAGE, ENVELOPE,
                 Includes(scripts))
    assert result.errors and result.implicit_keep == Keep("INBOX")


def test_include_depth_limit():
    scripts = {f"d{i}": f'require "include"; include "d{i + 1}";' for i in range(30)}
    result = run(compile_script('require "include"; include "d0";'), MESSAGE, ENVELOPE,
                 Includes(scripts, limits=Limits(max_include_depth=5)))
    assert_kept_with_error(result, "deeper than 5")


def test_cpu_budget_stops_a_long_script():
    # No loops in Sieve: a long straight script of tests is the way to burn CPU.
    tests = 'if header :matches "subject" "*h*e*l*l*o*" { }\n' * 3000
    result = run(compile_script(tests), MESSAGE, ENVELOPE, SieveContext(
        limits=Limits(max_steps=1000)))
    assert_kept_with_error(result, "budget")


def test_variable_doubling_is_capped():
    script = compile_script('require ["variables", "fileinto"]; set "a" "xx";\n' +
                            'set "a" "${a}${a}";\n' * 40 + 'set :length "n" "${a}"; '
                            'fileinto "${n}";')
    result = run(script, MESSAGE, ENVELOPE)
    assert not result.errors
    assert int(result.actions[0].mailbox) <= 64 * 1024


def test_matches_pattern_with_many_stars_is_linear():
    subject = "a" * 20000
    message = b"Subject: " + subject.encode() + b"\r\n\r\nx\r\n"
    pattern = "*a" * 30 + "*b"
    result = run(compile_script(f'if header :matches "subject" "{pattern}" {{ discard; }}'),
                 message, ENVELOPE)
    assert result.implicit_keep == Keep("INBOX") and not result.errors


def test_catastrophic_regex_is_a_runtime_error(monkeypatch):
    monkeypatch.setattr("mailyard.sieve.match.REGEX_TIMEOUT", 0.2)
    message = b"Subject: " + b"a" * 60 + b"!\r\n\r\nx\r\n"
    script = compile_script('require "regex"; if header :regex "subject" "^(a|aa)+$" '
                            '{ discard; }')
    result = run(script, message, ENVELOPE)
    assert_kept_with_error(result, "too long")


def test_header_edit_limit():
    script = compile_script('require "editheader";\n' + 'addheader "X-A" "b";\n' * 500)
    assert_kept_with_error(run(script, MESSAGE, ENVELOPE), "header edits")


@pytest.mark.parametrize("message", [
    b"",
    b"no header at all",
    b"\r\n\r\n\r\n",
    (b"Content-Type: multipart/mixed; boundary=\"x\"\r\n\r\n--x\r\nContent-Type: text/plain;"
    b" charset=klingon\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n"),
    b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
    b"Subject: =?bogus?x?zz?=\r\nFrom: <<<@@@>>>\r\nDate: not a date\r\n\r\n\xff\xfe",
    b"From: a@b.test\n" + b"X-Long: " + b"y" * 100000 + b"\n\nbody",
    b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\nContent-Type: "
    b"multipart/mixed; boundary=b\r\n\r\n" * 200,
])
def test_broken_messages_do_not_break_the_engine(message):
    script = compile_script(
        'require ["body", "date", "relational", "fileinto", "spamtest", "virustest"];\n'
        'if anyof (body :text :contains "x", date :value "gt" "date" "year" "1990",\n'
        '          address :domain "from" "b.test", header :contains "subject" "x",\n'
        '          spamtest :value "gt" "1", virustest "0", size :over 1) '
        '{ fileinto "seen"; }')
    result = run(script, message, ENVELOPE)
    assert not result.errors
    assert result.actions or result.implicit_keep


# -- fuzz: whatever compiles runs to a result; whatever the message, the engine answers --

PIECES = st.sampled_from([
    ('require ["fileinto", "variables", "imap4flags", "regex", "relational", "editheader", '
    '"include", "body", "date", "index", "vacation", "envelope", "subaddress", "copy", '
    '"reject", "duplicate", "mailbox", "spamtest", "virustest"];'),
    'if header :matches "subject" "*e*" { set "x" "${1}${2}"; }',
    'if header :regex "subject" "(h)(e)" { fileinto "${1}"; }',
    'fileinto :copy "${x}";', "keep;", "discard;", "stop;", 'redirect "a@b.test";',
    'addflag "${x}";', 'if hasflag :count "gt" "0" { removeflag "\\\\Seen"; }',
    'addheader "X-A" "${x}";', 'deleteheader :index 1 "subject";',
    'if body :text :contains "o" { set :upper "x" "${x}"; }',
    'if date :is "date" "year" "2000" { keep; }', 'vacation "${x}";',
    'if envelope :detail "to" "" { discard; }', 'reject "${x}";',
    'if address :count "ge" "from" "1" { fileinto :flags "a b" "f"; }',
    'include :optional "x";', 'if duplicate { discard; }', "if spamtest \"0\" { keep; }",
    'if mailboxexists "INBOX" { keep; }', "if not true {", "}",
])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(PIECES, max_size=12), st.binary(max_size=300))
def test_fuzz_compiled_scripts_run_to_a_result(pieces, tail):
    try:
        script = compile_script("\n".join(pieces))
    except SieveCompileError:
        return
    result = run(script, MESSAGE + tail, ENVELOPE)
    if result.errors:
        assert result.actions == [] and result.implicit_keep == Keep("INBOX")
    elif result.implicit_keep is None:
        # Something must have cancelled the implicit keep (RFC 5228 §2.10.2).
        assert any(type(a).__name__ in ("Discard", "Reject") or
                   (type(a).__name__ in ("Keep", "FileInto", "Redirect") and not a.copy)
                   for a in result.actions), result


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_messages(message):
    script = compile_script(
        'require ["body", "date", "relational", "fileinto", "variables", "editheader"];\n'
        'if header :matches "subject" "*" { set "s" "${1}"; }\n'
        'if body :raw :contains "x" { fileinto "raw"; }\n'
        'if body :text :contains "x" { fileinto "text"; }\n'
        'if address :all :count "ge" ["from", "to", "cc"] "1" { fileinto "addr"; }\n'
        'if date :value "ge" "date" "year" "1970" { fileinto "date"; }\n'
        'addheader "X-S" "${s}"; deleteheader "subject";\n')
    result = run(script, message, ENVELOPE)
    assert not result.errors
    if result.message is not None:
        assert result.message.startswith(b"X-S:")


def test_runtime_errors_name_script_and_line():
    script = compile_script('require ["include", "fileinto"];\nkeep;\n\n  include "gone";\n',
                            name="personal:main")
    result = run(script, MESSAGE, ENVELOPE)
    assert result.errors == ["personal:main: line 4: include: no personal script 'gone'"]
