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
