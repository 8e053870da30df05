"""Rules tested from data files (tests/spam/rules/*.txt), Stalwart style.

Each case is a few directive lines, then the message, then `<!-- NEXT TEST -->`:

    expect RULE_A RULE_B        exactly these rules hit (mailyard's own ruleset); bare
                                `expect` = no rule hits
    expect-spam yes|no          the verdict
    facts k=v k=v               MTA facts; `dns:QNAME/TYPE=a,b` adds DNS answers
    # comment

A false positive or negative someone reports becomes one more case here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "rules"
SEPARATOR = "<!-- NEXT TEST -->"


def load_cases():
    for file in sorted(DATA.glob("*.txt")):
        text = file.read_text()
        for index, chunk in enumerate(text.split(SEPARATOR + "\n")):
            lines = chunk.splitlines()
            expect, spam, facts = None, None, {}
            while lines and (lines[0].startswith(("expect", "facts", "#")) or not lines[0]):
                line = lines.pop(0)
                if line.startswith("expect-spam"):
                    spam = line.split()[1] == "yes"
                elif line.startswith("expect"):
                    expect = set(line.split()[1:])
                elif line.startswith("facts"):
                    for item in line.split()[1:]:
                        key, _, value = item.partition("=")
                        if key.startswith("dns:"):
                            facts.setdefault("dns", {})[key[4:]] = value.split(",")
                        else:
                            facts[key] = value
            message = ("\r\n".join(lines) + "\r\n").encode("utf-8")
            yield pytest.param(message, expect, spam, facts, id=f"{file.stem}-{index + 1}")


@pytest.mark.parametrize("message,expect,spam,facts", list(load_cases()))
def test_rule_case(builtin_engine, message, expect, spam, facts):
    verdict = builtin_engine.scan(message, facts=facts)
    hit = set(verdict.rule_names)
    if expect is not None:
        assert hit == expect, f"hits {sorted(hit)}, expected {sorted(expect)}"
    if spam is not None:
        assert verdict.is_spam is spam


def test_cases_were_found():
    assert len(list(load_cases())) >= 30


def test_dns_queries_name_what_the_rules_want(builtin_engine):
    msg = (b"Received: from relay.example.org (relay.example.org [81.2.69.160]) by mx.test;"
           b" Mon, 3 Mar 2025 10:00:05 +0000\r\nFrom: a@example.org\r\nSubject: hi\r\n\r\n"
           b"see http://www.evil.example/page and http://198.51.100.7/x\r\n")
    wanted = builtin_engine.dns_queries(msg)
    assert ("160.69.2.81.zen.spamhaus.org.", "A") in wanted
    assert ("evil.example.dbl.spamhaus.org.", "A") in wanted
    assert not any(name.startswith("7.100.51.198") for name, _ in wanted)  # no IPs in DBL
    # the filter's client IP wins over Received: parsing
    assert ("5.113.0.203.zen.spamhaus.org.", "A") in builtin_engine.dns_queries(
        msg, facts={"client_ip": "203.0.113.5"})


def test_header_fields_are_spamassassin_compatible(builtin_engine):
    from mailyard.spam import fold, header_fields

    verdict = builtin_engine.scan(
        b"Subject: x\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
    fields = dict(header_fields(verdict))
    assert fields["X-Spam-Flag"] == "YES"
    assert fields["X-Spam-Level"] == "*" * 50
    assert fields["X-Spam-Status"].startswith("Yes, score=100")
    assert " required=5.0 tests=GTUBE," in fields["X-Spam-Status"]
    assert fields["X-Spam-Status"].endswith(" autolearn=disabled")
    folded = fold("X-Spam-Status", fields["X-Spam-Status"])
    assert all(len(line) <= 78 for line in folded.split("\n"))
    ham = builtin_engine.scan(b"Subject: x\r\nFrom: a@example.org\r\n\r\nhi\r\n")
    assert "X-Spam-Flag" not in dict(header_fields(ham))
