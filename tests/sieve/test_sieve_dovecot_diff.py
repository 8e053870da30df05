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

from mailyard.sieve import (Discard, Keep, Redirect, Reject, SieveContext, SieveEnvelope,
                            Vacation, compile_script, run)

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


def dovecot_actions(workdir: Path, name: str, script: str) -> list[str]:
    path = workdir / f"{name}.sieve"
    path.write_text(script)
    path.chmod(0o644)
    proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), "-f", SENDER,
                           "-r", RECIPIENT, str(path), str(workdir / "message.eml")],
                          capture_output=True, text=True, timeout=60,
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


def our_actions(script: str) -> list[str]:
    result = run(compile_script(script), MESSAGE.encode(),
                 SieveEnvelope(sender=SENDER, recipient=RECIPIENT), SieveContext())
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


def test_both_refuse_the_same_broken_scripts(workdir):
    for name, script in {"unknown": "frobnicate;", "norequire": 'fileinto "x";',
                         "unterminated": "if true {"}.items():
        path = workdir / f"bad-{name}.sieve"
        path.write_text(script)
        path.chmod(0o644)
        proc = subprocess.run([SIEVE_TEST, "-c", str(workdir / "dovecot.conf"), str(path),
                               str(workdir / "message.eml")], capture_output=True, text=True,
                              timeout=60, env={"PATH": os.environ.get("PATH", ""),
                                               "HOME": str(workdir)})
        assert proc.returncode != 0
        with pytest.raises(Exception):
            compile_script(script)
