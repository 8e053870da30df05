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
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return parse_dovecot(proc.stdout)


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
            text = line[3:].strip()
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
