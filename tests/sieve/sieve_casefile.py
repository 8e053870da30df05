"""Reader for the data-driven Sieve cases (`*.cases` files next to this module).

A case file is a series of blocks:

    === NAME (free text, usually the RFC section)
    --- script
    <sieve text>
    --- message            (optional; the default message below otherwise)
    <RFC 5322 message>
    --- envelope           (optional) `from: ADDR`, `to: ADDR`, `runs: N`, `mailbox: NAME`,
                           `user: ADDR`, `now: ISO-8601`
    --- include personal NAME / --- include global NAME   (optional, repeatable)
    <sieve text>
    --- expect
    one line per action, then `implicit MAILBOX [flags]` or `implicit none`;
    `error` for a runtime error, `compile-error LINE` for a compile error

Lines of `expect` are compared after stripping; the result is summarised by `summarize`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

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

DEFAULT_MESSAGE = """\
Return-Path: <coyote@desert.example.org>
Received: from mx.example.org by mx.acme.example.com; Tue, 1 Apr 1997 09:06:40 -0800
Date: Tue, 1 Apr 1997 09:06:31 -0800
From: coyote@desert.example.org
To: roadrunner@acme.example.com
Subject: I have a present for you
Message-ID: <1997040109@desert.example.org>
X-Caffeine: C8H10N4O2

Look, I'm sorry about the whole anvil thing, and I really
didn't mean to try and drop it on you from the top of the
cliff.  I want to try to make it up to you.  I've got some
great birdseed over here at my place--top of the line
stuff--and if you come by, I'll have it all wrapped up
for you.  I'm really sorry for all the problems I've caused
for you over the years, but I know we can work this out.
--
Wile E. Coyote   "Super Genius"   coyote@desert.example.org
"""


@dataclass
class Case:
    name: str
    script: str = ""
    message: str = DEFAULT_MESSAGE
    envelope: dict = field(default_factory=dict)
    includes: dict = field(default_factory=dict)
    expect: list[str] = field(default_factory=list)


def load_cases(path: Path) -> list[Case]:
    cases: list[Case] = []
    section = None
    buf: list[str] = []

    def flush() -> None:
        if not cases or section is None:
            return
        case = cases[-1]
        text = "\n".join(buf) + ("\n" if buf else "")
        if section == "script":
            case.script = text
        elif section == "message":
            case.message = text
        elif section == "envelope":
            for line in buf:
                if line.strip():
                    key, _, value = line.partition(":")
                    case.envelope[key.strip()] = value.strip()
        elif section.startswith("include "):
            _, location, name = section.split()
            case.includes[(name, location)] = text
        elif section == "expect":
            case.expect = [line.strip() for line in buf if line.strip()]

    for line in path.read_text("utf-8").split("\n"):
        if line.startswith("=== "):
            flush()
            cases.append(Case(line[4:].strip()))
            section, buf = None, []
        elif line.startswith("--- "):
            flush()
            section, buf = line[4:].strip(), []
        elif section is not None:
            buf.append(line)
    flush()
    return cases


class CaseContext(SieveContext):
    def __init__(self, includes: dict, **kwargs):
        super().__init__(**kwargs)
        self.includes = includes

    def load_include(self, name: str, location: str) -> str | None:
        return self.includes.get((name, location))


def summarize(result) -> list[str]:
    if result.errors:
        return ["error"]
    out = []
    for action in result.actions:
        if isinstance(action, Keep):
            line = f"store {action.mailbox}"
            if action.flags:
                line += " flags=" + ",".join(action.flags)
            if action.create:
                line += " create"
            if action.copy:
                line += " copy"
        elif isinstance(action, Redirect):
            line = f"redirect {action.address}" + (" copy" if action.copy else "")
        elif isinstance(action, Discard):
            line = "discard"
        elif isinstance(action, Reject):
            line = ("ereject " if action.extended else "reject ") + " | ".join(
                action.reason.strip().splitlines())
        elif isinstance(action, Vacation):
            line = f"vacation {action.seconds} {action.subject}"
        else:
            line = repr(action)
        out.append(line)
    keep = result.implicit_keep
    if keep is None:
        out.append("implicit none")
    else:
        out.append(f"implicit {keep.mailbox}" + (" flags=" + ",".join(keep.flags)
                                                 if keep.flags else ""))
    return out


def run_case(case: Case) -> list[str]:
    env = case.envelope
    envelope = SieveEnvelope(sender=env.get("from", "coyote@desert.example.org"),
                             recipient=env.get("to", "roadrunner@acme.example.com"))
    now = dt.datetime.fromisoformat(env["now"]) if "now" in env else None
    mailboxes = tuple(m.strip() for m in env.get("mailbox", "INBOX").split(","))
    context = CaseContext(case.includes, user_addresses=tuple(
        a.strip() for a in env.get("user", "").split(",") if a.strip()), now=now,
        mailboxes=mailboxes)
    try:
        script = compile_script(case.script, name="case")
    except SieveCompileError as exc:
        return [f"compile-error {exc.line}"]
    message = case.message.replace("\n", "\r\n").encode("utf-8")
    result = None
    for _ in range(int(env.get("runs", "1"))):
        result = run(script, message, envelope, context)
    return summarize(result)
