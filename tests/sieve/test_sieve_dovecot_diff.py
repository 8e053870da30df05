"""Differential test: our engine and Dovecot's `sieve-test` (Debian dovecot-sieve) must take
the same actions on the same scripts and messages."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mailyard.sieve import (
    Discard,
    Keep,
    Redirect,
    Reject,
    SieveCompileError,
    SieveContext,
    SieveEnvelope,
    Vacation,
    compile_script,
    run,
)

SIEVE_TEST = "/usr/bin/sieve-test"
pytestmark = pytest.mark.skipif(not os.path.exists(SIEVE_TEST),
                                reason="Dovecot's sieve-test is not installed (dovecot-sieve)")

SENDER, RECIPIENT = "coyote@desert.example.org", "roadrunner@acme.example.com"
MESSAGE = f"""\
From: Wile E. Coyote <{SENDER}>
To: Road Runner <{RECIPIENT}>, beep+birds@acme.example.com
Cc: other@example.net
Subject: [acme-users] I have a present for you
X-Priority: 2
Message-ID: <diff-1@desert.example.org>
Date: Tue, 1 Apr 1997 09:06:31 -0800
Content-Type: text/plain; charset=utf-8

I've got some great birdseed over here at my place.
""".replace("\n", "\r\n")

SCRIPTS = {
    "fileinto": 'require "fileinto"; if header :contains "subject" "present" '
                '{ fileinto "Gifts"; }',
    "no-match-keeps": 'require "fileinto"; if header :is "subject" "nope" { fileinto "X"; }',
    "redirect-copy-flags": 'require ["fileinto", "copy", "imap4flags"];\n'
                           'redirect :copy "wile@example.net";\n'
                           'fileinto :flags "\\\\Flagged" "Flagged";',
    "discard": 'if address :domain :is "from" "desert.example.org" { discard; }',
    "reject": 'require "reject"; reject "not from you";',
    "vacation": 'require "vacation"; vacation :days 3 :subject "Away" "I am away.";',
    "variables": 'require ["variables", "fileinto"];\n'
                 'if header :matches "subject" "[*] *" { fileinto "lists.${1}"; }',
    "subaddress": 'require ["subaddress", "fileinto"];\n'
                  'if address :detail "to" "birds" { fileinto "birds"; }\n'
                  'if address :user :is "to" "beep" { fileinto "beep"; }',
    "relational": 'require ["relational", "comparator-i;ascii-numeric", "fileinto"];\n'
                  'if address :count "ge" :comparator "i;ascii-numeric" ["to","cc"] "3" '
                  '{ fileinto "many"; }\n'
                  'if header :value "lt" :comparator "i;ascii-numeric" "x-priority" "3" '
                  '{ fileinto "urgent"; }',
    "body": 'require ["body", "fileinto"]; if body :text :contains "birdseed" '
            '{ fileinto "seed"; }',
    "body-no-captures": 'require ["body", "fileinto", "variables"];\n'
                        'if header :matches "subject" "*present*" { set "a" "${1}"; }\n'
                        'if body :text :matches "*birdseed*" { fileinto "b-${1}-${a}"; }',
    "keep-and-fileinto": 'require "fileinto"; keep; fileinto "INBOX"; fileinto "A"; '
                         'fileinto "A";',
    "implicit-flags": 'require "imap4flags"; addflag "\\\\Seen"; addflag "$Label1";',
    "envelope": 'require ["envelope", "fileinto"];\n'
                f'if envelope :is "from" "{SENDER}" {{ fileinto "env"; }}\n'
                'if envelope :domain "to" "acme.example.com" { fileinto "env-to"; }',
    "date": 'require ["date", "relational", "fileinto"];\n'
            'if date :value "ge" :originalzone "date" "hour" "09" { fileinto "morning"; }',
    "editheader": 'require ["editheader", "fileinto"]; addheader "X-Seen" "yes";\n'
                  'if header "x-seen" "yes" { fileinto "edited"; }',
    "matches-captures": 'require ["variables", "fileinto"];\n'
                        'if header :matches "subject" "*a*e*" { fileinto "${1}|${2}|${3}"; }\n'
                        'if header :matches "from" "*<*@*>" { fileinto "${0}"; }',
    "set-modifiers": 'require ["variables", "fileinto"];\n'
                     'set :upperfirst :lower "a" "hELLO wORLD"; fileinto "${a}";\n'
                     'set :length "b" "${a}"; fileinto "${b}";\n'
                     'set :quotewildcard "c" "a*b?c"; fileinto "${c}";',
    "string-count": 'require ["variables", "relational", "comparator-i;ascii-numeric", '
                    '"fileinto"];\n'
                    'if string :count "eq" :comparator "i;ascii-numeric" ["a", "", "b"] "2" '
                    '{ fileinto "two"; }',
    "flags-remove": 'require ["imap4flags", "fileinto"];\n'
                    'setflag ["\\\\Seen", "\\\\Flagged", "$A"]; removeflag "\\\\Flagged";\n'
                    'if hasflag :is "$a" { fileinto "has-a"; }',
    "redirect-twice": 'redirect "x@example.net"; redirect "X@example.net"; '
                      'redirect "y@example.net"; redirect "y@EXAMPLE.net"; '
                      'redirect "Z@EXAMPLE.NET";',
    "discard-then-keep": "discard; keep;",
    "copy-and-discard": 'require ["fileinto", "copy"]; fileinto :copy "C"; discard;',
    "index": 'require ["index", "fileinto", "date"];\n'
             'if header :index 1 :contains "to" "road" { fileinto "first-to"; }\n'
             'if date :zone "+0000" "date" "hour" "17" { fileinto "utc-17"; }',
    "regex": 'require ["regex", "variables", "fileinto"];\n'
             'if header :regex "subject" "^\\\\[([a-z-]+)\\\\]" { fileinto "re-${1}"; }',
    "raw-body": 'require ["body", "fileinto"]; if body :raw :contains "birdseed" '
                '{ fileinto "raw"; }',
    "exists-size": 'require "fileinto"; if allof(exists ["from", "date"], size :under 10K, '
                   'not size :over 100K) { fileinto "sized"; }',
    "encoded-character": 'require ["encoded-character", "fileinto"];\n'
                         'if header :contains "subject" "${hex:70 72}esent" { fileinto "enc"; }',
    "envelope-detail": 'require ["envelope", "subaddress", "fileinto"];\n'
                       'if envelope :user "to" "roadrunner" { fileinto "user"; }\n'
                       'if envelope :detail "to" "" { fileinto "nodetail"; }',
}

VACATION = 'require "vacation"; vacation :subject "Away" "I am away.";'
# RFC 3834 / RFC 5230 §4.5 suppression: (message header change, envelope sender)
VACATION_VARIANTS = {
    "list-id": ("List-Id: <birds.example.org>\r\n", SENDER),
    "precedence-bulk": ("Precedence: bulk\r\n", SENDER),
    "auto-submitted": ("Auto-Submitted: auto-replied\r\n", SENDER),
    "auto-submitted-no": ("Auto-Submitted: no\r\n", SENDER),
    "mailer-daemon": ("", "MAILER-DAEMON@desert.example.org"),
    "owner": ("", "owner-birds@desert.example.org"),
    "not-to-me": ("", SENDER),
}

DOVECOT_CONF = """\
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{dir}/mail
protocols =
plugin {{
  sieve_extensions = +vacation-seconds +editheader
}}
"""


def dovecot_actions(workdir: Path, name: str, script: str, message: str = "message.eml",
                    sender: str = SENDER) -> list[str]:
    path = workdir / f"{name}.sieve"
    path.write_text(script)
    path.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), "-f", sender,
                           "-r", RECIPIENT, str(path), str(workdir / message)],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
    if proc.returncode < 0 and "Panic:" in proc.stderr:
        raise DovecotPanicked(proc.stderr.splitlines()[0])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return parse_dovecot(proc.stdout)


class DovecotPanicked(Exception):
    """sieve-test died on one of its own assertions: there is no reference answer.

    Dovecot 2.3.19 panics in `pool_get_exp_grown_size` on some `:matches` patterns with a
    run of "?" longer than the value and a "*" (`"A" :matches "??*"`, `"AB" :matches
    "???*"`; checked by hand, 2026-12-06). Generated tests skip such examples.
    """


def parse_dovecot(output: str) -> list[str]:
    """Normalise sieve-test's report to lines like ours (`summary` below)."""
    out: list[str] = []
    section = None
    for line in output.splitlines():
        if line.startswith("Performed actions:"):
            section = "actions"
        elif line.startswith("Implicit keep:"):
            section = "implicit"
        elif section and line.startswith(" * "):
            text = line[3:].rstrip("\r\n")
            prefix = "implicit " if section == "implicit" else ""
            m = re.match(r"store message in folder: (.*)", text)
            if m:
                out.append(f"{prefix}store {m.group(1)}")
            elif text.startswith("redirect message to:"):
                out.append(f"redirect {text.split(':', 1)[1].strip().strip('<>')}")
            elif text == "discard":
                out.append("discard")
            elif text.startswith("reject message"):
                out.append("reject")
            elif text.startswith("send vacation message"):
                out.append("vacation")
            else:
                out.append(text)
        elif section and line.strip().startswith("+ add IMAP flags:") and out:
            flags = sorted(f.lower() for f in line.split(":", 1)[1].split())
            out[-1] += " flags=" + ",".join(flags)
        elif section and "preserve implicit keep" in line and out:
            pass  # :copy: our "implicit store INBOX" line says the same
    return sorted(out)


def our_actions(script: str, message: str = MESSAGE, sender: str = SENDER) -> list[str]:
    result = run(compile_script(script), message.encode(),
                 SieveEnvelope(sender=sender, recipient=RECIPIENT), SieveContext())
    assert not result.errors, result.errors
    out = []
    for action in result.actions:
        if isinstance(action, Keep):
            line = f"store {action.mailbox}"
            if action.flags:
                line += " flags=" + ",".join(sorted(f.lower() for f in action.flags))
            out.append(line)
        elif isinstance(action, Redirect):
            out.append(f"redirect {action.address}")
        elif isinstance(action, Discard):
            out.append("discard")
        elif isinstance(action, Reject):
            out.append("reject")
        elif isinstance(action, Vacation):
            out.append("vacation")
    keep = result.implicit_keep
    if keep is not None:
        line = f"implicit store {keep.mailbox}"
        if keep.flags:
            line += " flags=" + ",".join(sorted(f.lower() for f in keep.flags))
        out.append(line)
    return sorted(out)


@pytest.fixture(scope="module")
def workdir():
    # sieve-test drops privileges to the mail user: the files must be readable by it.
    path = Path(tempfile.mkdtemp(prefix="mailyard-sieve-diff-"))
    path.chmod(0o777)
    (path / "dovecot.conf").write_text(DOVECOT_CONF.format(dir=path))
    (path / "message.eml").write_text(MESSAGE, newline="")
    for f in path.iterdir():
        f.chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_same_actions_as_dovecot(workdir, name):
    script = SCRIPTS[name]
    assert our_actions(script) == dovecot_actions(workdir, name, script)


TRICKY_MESSAGE = """\
From: "Coyote, Wile E." <Wile.Coyote@Desert.Example.ORG>
To: undisclosed-recipients:;
Cc: Friends: road@acme.example.com, "quoted local"@acme.example.com;, plain@acme.example.com
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe_und_*Sterne*?= =?iso-8859-1?q?_caf=E9?=
X-Empty:
X-Multi: first
X-Multi: second
Date: Tue, 1 Apr 1997 23:59:59 +1400
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Caf=E9 au lait.
""".replace("\n", "\r\n")

TRICKY_SCRIPTS = {
    "decoded-subject": 'require ["fileinto", "variables"];\n'
                       'if header :matches "subject" "Gr* und \\\\*Sterne\\\\* *" '
                       '{ fileinto "m-${1}-${2}"; }\n'
                       'if header :contains "subject" "caf\u00e9" { fileinto "cafe"; }',
    "address-case": 'require "fileinto";\n'
                    'if address :domain :is "from" "desert.example.org" { fileinto "dom"; }\n'
                    'if address :localpart :is :comparator "i;octet" "from" "Wile.Coyote" '
                    '{ fileinto "lp"; }',
    "groups": 'require ["fileinto", "relational", "comparator-i;ascii-numeric"];\n'
              'if address :count "eq" :comparator "i;ascii-numeric" "cc" "3" { fileinto "c3"; }\n'
              'if address :is "cc" "road@acme.example.com" { fileinto "road"; }\n'
              'if address :count "eq" :comparator "i;ascii-numeric" "to" "0" { fileinto "t0"; }',
    "empty-header": 'require "fileinto";\n'
                    'if header :is "x-empty" "" { fileinto "empty"; }\n'
                    'if header :contains "x-missing" "" { fileinto "missing"; }\n'
                    'if header :is "x-multi" "second" { fileinto "multi"; }\n'
                    'if exists "x-empty" { fileinto "exists"; }',
    "body-charset": 'require ["body", "fileinto"];\n'
                    'if body :text :contains "caf\u00e9 au lait" { fileinto "latin1"; }',
    "date-far-zone": 'require ["date", "fileinto", "variables"];\n'
                     'if date :matches :zone "+0000" "date" "date" "*" { fileinto "utc-${1}"; }\n'
                     'if date :matches :originalzone "date" "zone" "*" { fileinto "z${1}"; }',
}


HTML_MESSAGE = """\
From: a@example.org
To: roadrunner@acme.example.com
Subject: html
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/html; charset=utf-8

<html><head><style>p {{ color: red }}</style></head>
<body><b>Bold</b> words &amp; more <!-- hidden comment --></body></html>
--b
Content-Type: application/pdf

PDF secret
--b--
""".replace("\n", "\r\n").replace("{{", "{").replace("}}", "}")

BODY_KEYS = ["<b>", "Bold  words", "Bold words", "& more", "&amp;", "secret", "color",
             "hidden comment", "html"]


@pytest.mark.parametrize("selector", [":text", ':content "text"', ':content ""', ":raw"])
def test_same_body_extraction_as_dovecot(workdir, selector):
    path = workdir / "html.eml"
    path.write_text(HTML_MESSAGE, newline="")
    path.chmod(0o644)
    tests = "\n".join(f'if body {selector} :contains "{key}" {{ fileinto "k{i}"; }}'
                      for i, key in enumerate(BODY_KEYS))
    script = 'require ["body", "fileinto"];\n' + tests
    ours = our_actions(script, HTML_MESSAGE)
    name = "body-" + selector.strip(':"').replace(" ", "-").replace('"', "")
    assert ours == dovecot_actions(workdir, name, script, path.name)


@pytest.mark.parametrize("name", sorted(TRICKY_SCRIPTS))
def test_same_actions_on_a_tricky_message(workdir, name):
    path = workdir / "tricky.eml"
    path.write_text(TRICKY_MESSAGE, newline="", encoding="latin-1")
    path.chmod(0o644)
    script = TRICKY_SCRIPTS[name]
    ours = our_actions(script, TRICKY_MESSAGE)
    assert ours == dovecot_actions(workdir, f"tricky-{name}", script, path.name)


INCLUDED = {
    ("personal", "lib"): 'require ["fileinto", "variables", "include"]; global "where";\n'
                         'fileinto "personal-${where}"; return; fileinto "never";',
    ("personal", "spam"): 'if header :contains "subject" "present" { discard; stop; }',
    ("global", "glib"): 'require ["fileinto"]; fileinto "FromGlobal";',
}
INCLUDE_SCRIPTS = {
    "include-basic": 'require ["include", "variables"]; global "where"; set "where" "x";\n'
                     'include :personal "lib"; include :global "glib";\n'
                     'include :optional "missing"; include :once "lib"; include :once "lib";',
    "include-stop": 'require ["include", "fileinto"]; include "spam"; fileinto "after";',
}


class _DirContext(SieveContext):
    def load_include(self, name, location):
        return INCLUDED.get((location, name))


@pytest.mark.parametrize("name", sorted(INCLUDE_SCRIPTS))
def test_same_include_behaviour_as_dovecot(workdir, name):
    personal, global_ = workdir / "personal", workdir / "global"
    for (location, script_name), text in INCLUDED.items():
        base = personal if location == "personal" else global_
        base.mkdir(exist_ok=True)
        base.chmod(0o755)
        (base / f"{script_name}.sieve").write_text(text)
        (base / f"{script_name}.sieve").chmod(0o644)
    conf = workdir / "dovecot-include.conf"
    conf.write_text(DOVECOT_CONF.format(dir=workdir).replace(
        "plugin {", f"plugin {{\n  sieve = file:{personal};active={workdir}/active.sieve\n"
                    f"  sieve_global = {global_}"))
    conf.chmod(0o644)
    path = workdir / f"{name}.sieve"
    path.write_text(INCLUDE_SCRIPTS[name])
    path.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(conf), "-f", SENDER, "-r", RECIPIENT,
                           str(path), str(workdir / "message.eml")],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = run(compile_script(INCLUDE_SCRIPTS[name]), MESSAGE.encode(),
                 SieveEnvelope(sender=SENDER, recipient=RECIPIENT), _DirContext())
    assert not result.errors, result.errors
    ours = sorted([f"store {a.mailbox}" if isinstance(a, Keep) else type(a).__name__.lower()
                   for a in result.actions] +
                  (["implicit store INBOX"] if result.implicit_keep else []))
    assert ours == parse_dovecot(proc.stdout)


@pytest.mark.parametrize("variant", sorted(VACATION_VARIANTS))
def test_same_vacation_decisions_as_dovecot(workdir, variant):
    # sieve-test only lists a vacation action; whether it would really answer (RFC 3834
    # checks) shows when it executes (-e): "sent vacation response" / "discarding ...".
    extra, sender = VACATION_VARIANTS[variant]
    message = extra + MESSAGE
    if variant == "not-to-me":
        message = message.replace(RECIPIENT, "someone@acme.example.com")
    path = workdir / f"message-{variant}.eml"
    path.write_text(message, newline="")
    path.chmod(0o644)
    script = workdir / f"vac-{variant}.sieve"
    script.write_text(VACATION)
    script.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), "-e", "-f", sender,
                           "-r", RECIPIENT, str(script), str(path)],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    dovecot_sent = "sent vacation response" in log
    assert dovecot_sent or "discarding vacation response" in log or \
        "not sending vacation response" in log
    ours_sent = "vacation" in our_actions(VACATION, message, sender)
    assert ours_sent == dovecot_sent
    assert ours_sent == (variant == "auto-submitted-no")


def test_both_refuse_the_same_broken_scripts(workdir):
    for name, script in {"unknown": "frobnicate;", "norequire": 'fileinto "x";',
                         "unterminated": "if true {"}.items():
        path = workdir / f"bad-{name}.sieve"
        path.write_text(script)
        path.chmod(0o644)
        proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), str(path),
                               str(workdir / "message.eml")], check=False,
                              capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
        assert proc.returncode != 0
        with pytest.raises(SieveCompileError):
            compile_script(script)


# -- generated scripts: match types and comparators decided the same way as Dovecot -------

PATTERN_CHARS = st.sampled_from(list("aeiouAE[] -*?") + ["\\\\*", "\\\\?", "present", "acme"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(match=st.sampled_from([":is", ":contains", ":matches"]),
       comparator=st.sampled_from(["i;octet", "i;ascii-casemap"]),
       pattern=st.lists(PATTERN_CHARS, max_size=8).map("".join))
def test_generated_matches_agree_with_dovecot(workdir, match, comparator, pattern):
    script = (f'require ["fileinto", "variables"];\n'
              f'if header {match} :comparator "{comparator}" "subject" "{pattern}" '
              f'{{ fileinto "hit-${{1}}"; }}')
    assert our_actions(script) == dovecot_actions(workdir, "generated", script)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(subject=st.text(alphabet="abAB-*?", min_size=1, max_size=8),
       pattern=st.text(alphabet="ab*?-", max_size=6))
def test_generated_match_variables_agree_with_dovecot(workdir, subject, pattern):
    assume(not subject.startswith((" ", "-")))
    # Dovecot 2.3.19 reports `"??" :matches "?a*"` as a match (with a third match variable the
    # pattern cannot produce); RFC 5228 §2.7.1 says "?" matches one character and "a" only
    # itself, so we answer no match. Values holding "?" are left out of this comparison.
    assume("?" not in subject or "?" not in pattern)
    # The same Dovecot bug, more generally: a "?" followed by literal characters and then a
    # "*" matches any value of two or more characters (`"AA" :matches "?-*"` gives
    # m|AA|A||A|, `"bA" :matches "?b*"` too), whatever the literals. We follow the RFC; those
    # patterns are left out too (checked by hand with sieve-test, 2026-12-06).
    assume(not re.search(r"\?[^*?]+\*", pattern))
    message = MESSAGE.replace("Subject: [acme-users] I have a present for you",
                              f"Subject: {subject}")
    path = workdir / "generated-subject.eml"
    path.write_text(message, newline="")
    path.chmod(0o644)
    script = ('require ["fileinto", "variables"];\n'
              f'if header :matches "subject" "{pattern}" '
              '{ fileinto "m|${0}|${1}|${2}|${3}|${4}"; }')
    ours = our_actions(script, message)
    try:
        theirs = dovecot_actions(workdir, "generated-subject", script, path.name)
    except DovecotPanicked:
        assume(False)
    assert ours == theirs


NUMBERISH = st.sampled_from(["", "0", "00", "7", "10", "9", "abc", "ABC", "Abd", "12x", "x12",
                             "1000000000000000000000"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(relation=st.sampled_from(["gt", "ge", "lt", "le", "eq", "ne"]),
       comparator=st.sampled_from(["i;octet", "i;ascii-casemap", "i;ascii-numeric"]),
       value=NUMBERISH, key=NUMBERISH, count=st.booleans())
def test_generated_relational_agrees_with_dovecot(workdir, relation, comparator, value, key,
                                                  count):
    kind = ":count" if count else ":value"
    script = ('require ["fileinto", "variables", "relational", '
              '"comparator-i;ascii-numeric"];\n'
              f'if string {kind} "{relation}" :comparator "{comparator}" ["{value}", "x"] '
              f'"{key}" {{ fileinto "hit"; }}')
    assert our_actions(script) == dovecot_actions(workdir, "generated-rel", script)


@pytest.mark.parametrize("comparator", ["i;octet", "i;ascii-casemap", "i;ascii-numeric"])
def test_count_uses_the_given_comparator(workdir, comparator):
    # Regression: :count once compared numerically whatever the comparator; RFC 5231 §4.2
    # (and Dovecot) use the comparator given, so "2" lt "10" is false as strings.
    script = ('require ["fileinto", "relational", "variables", '
              '"comparator-i;ascii-numeric"];\n'
              f'if string :count "lt" :comparator "{comparator}" ["a", "b"] "10" '
              '{ fileinto "hit"; }')
    ours = our_actions(script)
    assert ours == dovecot_actions(workdir, "count-comparator", script)
    assert ("store hit" in ours) == (comparator == "i;ascii-numeric")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(local=st.text(alphabet="ab+-.", min_size=1, max_size=6),
       domain=st.sampled_from(["x.test", "X.Test", "sub.x.test"]),
       part=st.sampled_from([":all", ":localpart", ":domain", ":user", ":detail"]))
def test_generated_address_parts_agree_with_dovecot(workdir, local, domain, part):
    # Only valid dot-atoms: Dovecot re-quotes invalid local parts when it prints them.
    assume(not local.startswith(".") and not local.endswith(".") and ".." not in local)
    message = MESSAGE.replace(f"To: Road Runner <{RECIPIENT}>", f"To: <{local}@{domain}>")
    path = workdir / "generated-address.eml"
    path.write_text(message, newline="")
    path.chmod(0o644)
    script = ('require ["fileinto", "variables", "subaddress"];\n'
              f'if address {part} :matches "to" "*" {{ fileinto "got-${{1}}"; }}')
    ours = our_actions(script, message)
    assert ours == dovecot_actions(workdir, "generated-address", script, path.name)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(modifiers=st.lists(st.sampled_from([":lower", ":upper", ":lowerfirst", ":upperfirst",
                                           ":quotewildcard", ":length"]),
                          unique=True, max_size=3),
       value=st.text(alphabet="aBcD*?\\ é", max_size=6))
def test_generated_set_modifiers_agree_with_dovecot(workdir, modifiers, value):
    literal = value.replace("\\", "\\\\").replace('"', '\\"')
    script = ('require ["fileinto", "variables"];\n'
              f'set {" ".join(modifiers)} "a" "{literal}"; fileinto "v-${{a}}";')
    try:
        compile_script(script)
    except SieveCompileError:
        return  # two modifiers of one precedence: both refuse (checked elsewhere)
    assert our_actions(script) == dovecot_actions(workdir, "generated-set", script)


EDIT_MESSAGE = ("Received: by mx.example.org; Tue, 1 Apr 1997 09:06:40 -0800\r\n"
                "From: a@example.org\r\nTo: roadrunner@acme.example.com\r\n"
                "Subject: a present\r\nX-Dup: 1\r\nX-Dup: 2\r\nX-Dup: 3\r\n\r\nhi\r\n")
EDIT_SCRIPTS = {
    "add-top-and-last": 'require "editheader"; addheader "X-First" "one"; '
                        'addheader :last "X-Last" "two";',
    "delete-by-value": 'require "editheader"; deleteheader :matches "subject" "*present*";',
    "delete-by-index": 'require ["editheader", "index"]; deleteheader :index 1 "X-Dup"; '
                       'deleteheader :index 1 :last "X-Dup";',
    "protected": 'require "editheader"; deleteheader "Received"; addheader "Received" "x";',
    "delete-all": 'require "editheader"; deleteheader "x-dup";',
    "non-ascii": 'require "editheader"; addheader "X-Note" "Gr\u00fc\u00dfe aus K\u00f6ln";',
    "variables": 'require ["editheader", "variables"];\n'
                 'if header :matches "subject" "a *" { addheader "X-Thing" "${1}"; }\n'
                 'deleteheader :is "X-Dup" ["1", "3"];',
}


def _fields(raw: bytes) -> list[tuple[str, str]]:
    from mailyard.sieve.message import SieveMessage

    return [(name.lower(), SieveMessage.decoded(value))
            for name, value in SieveMessage(raw).fields]


@pytest.mark.parametrize("name", sorted(EDIT_SCRIPTS))
def test_same_header_edits_as_dovecot(workdir, name):
    maildir = workdir / f"mail-{name}"
    conf = workdir / f"dovecot-{name}.conf"
    conf.write_text(DOVECOT_CONF.format(dir=workdir).replace(
        f"maildir:{workdir}/mail", f"maildir:{maildir}"))
    conf.chmod(0o644)
    message = workdir / "edit.eml"
    message.write_text(EDIT_MESSAGE, newline="")
    message.chmod(0o644)
    script = workdir / f"edit-{name}.sieve"
    script.write_text(EDIT_SCRIPTS[name])
    script.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(conf), "-e", str(script), str(message)],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = [p for p in (maildir / "new").iterdir()]
    assert len(stored) == 1
    result = run(compile_script(EDIT_SCRIPTS[name]), EDIT_MESSAGE.encode(), SieveEnvelope())
    ours = result.message if result.message is not None else EDIT_MESSAGE.encode()
    assert _fields(ours) == _fields(stored[0].read_bytes())


CONFLICTS = {
    "fileinto-reject": 'require ["reject", "fileinto"]; fileinto "x"; reject "no";',
    "redirect-reject": 'require ["reject"]; redirect "a@example.net"; reject "no";',
    "reject-redirect-copy": 'require ["reject", "copy"]; reject "no"; '
                            'redirect :copy "a@example.net";',
    "vacation-reject": 'require ["reject", "vacation"]; vacation "v"; reject "no";',
    "keep-reject": 'require ["reject"]; keep; reject "no";',
    "two-rejects": 'require ["reject"]; reject "no"; reject "again";',
    "two-vacations": 'require ["vacation"]; vacation "a"; vacation "b";',
    "discard-reject": 'require ["reject"]; discard; reject "no";',
}


@pytest.mark.parametrize("name", sorted(CONFLICTS))
def test_same_action_conflicts_as_dovecot(workdir, name):
    path = workdir / f"conflict-{name}.sieve"
    path.write_text(CONFLICTS[name])
    path.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), "-f", SENDER,
                           "-r", RECIPIENT, str(path), str(workdir / "message.eml")],
                          check=False, capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)})
    dovecot_error = " error: " in proc.stdout + proc.stderr
    result = run(compile_script(CONFLICTS[name]), MESSAGE.encode(),
                 SieveEnvelope(sender=SENDER, recipient=RECIPIENT), SieveContext())
    assert bool(result.errors) == dovecot_error
    if result.errors:
        assert result.actions == [] and result.implicit_keep == Keep("INBOX")


ACTION_POOL = st.sampled_from([
    "keep;", "discard;", 'fileinto "A";', 'fileinto "INBOX";', 'fileinto :copy "B";',
    'redirect "r@example.net";', 'redirect :copy "c@example.net";',
    'fileinto :flags "\\\\Seen" "A";', 'addflag "$x";', 'keep :flags "\\\\Flagged";',
    'if true { stop; }', 'if false { discard; }',
])


@settings(max_examples=50, deadline=None, derandomize=True)
@given(actions=st.lists(ACTION_POOL, min_size=1, max_size=5))
def test_generated_action_lists_agree_with_dovecot(workdir, actions):
    script = 'require ["fileinto", "copy", "imap4flags"];\n' + "\n".join(actions)
    assert our_actions(script) == dovecot_actions(workdir, "generated-actions", script)
