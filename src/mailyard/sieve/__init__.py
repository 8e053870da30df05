"""Sieve (RFC 5228 and extensions): a pure engine — script text in, actions out.

No I/O happens here: state the engine needs from outside (vacation reply memory, duplicate
tracking, which mailboxes exist, included scripts, the clock) comes through the hooks of a
`SieveContext` that the caller subclasses. Storage of users' scripts and the ManageSieve
server live in `mailyard.sieve.storage` and `mailyard.sieve.managesieve`.

Use::

    from mailyard.sieve import compile_script, run, SieveEnvelope, SieveContext
    script = compile_script(text, name="personal:main")   # raises SieveCompileError
    result = run(script, message_bytes,
                 SieveEnvelope(sender="a@x.test", recipient="bob@example.test"),
                 context)                                  # never raises for bad input
    result.actions        # [FileInto(mailbox, flags, create, copy) | Keep(...) |
                          #  Redirect(address, copy) | Discard() | Reject(reason, extended)
                          #  | Vacation(seconds, subject, from_, reason, addresses, mime,
                          #             handle, to, in_reply_to)]
    result.implicit_keep  # Keep("INBOX", flags) or None
    result.errors         # [] or the runtime error; then actions == [] and implicit keep
    result.message        # the message bytes after editheader, or None if unchanged
    result.stopped        # the script executed `stop`

For a delivery: `run_chain([before, user, after], message, envelope, context)` with
`context = mailyard.sieve.usercontext.UserSieveContext(data_dir, user, global_dir=...,
mailbox_exists=..., limits=limits_from_settings(settings))` (vacation/duplicate memories on
disk); the user's script text is `mailyard.sieve.storage.active_script_text(data_dir, user)`
and the shipped before-script `storage.default_before_script()`.

`Keep` is the store action (`FileInto` is a subclass); `Reject.extended` marks `ereject`.
A `Vacation` in the actions has already passed the RFC 3834 / RFC 5230 checks and the reply
memory; the caller builds and sends the reply (to `Vacation.to`, with `from_` or the user's
address, `In-Reply-To: in_reply_to`, `Auto-Submitted: auto-replied`).

`SieveContext(user_addresses=(...), limits=Limits(...), now=datetime)` hooks to override:
`vacation_should_reply(key, seconds) -> bool`, `duplicate_seen(id, seconds, last=False) ->
bool`, `mailbox_exists(name) -> bool`, `load_include(name, location) -> str | None`
(location "personal" or "global"), `now()`. The defaults keep memory in the object.

Extensions: see `EXTENSIONS` (the ManageSieve SIEVE capability is built from it).
"""

from __future__ import annotations

from mailyard.sieve.actions import (
    Action,
    Discard,
    FileInto,
    Keep,
    Limits,
    Redirect,
    Reject,
    SieveContext,
    SieveEnvelope,
    SieveResult,
    Vacation,
    limits_from_settings,
)
from mailyard.sieve.grammar import SieveCompileError
from mailyard.sieve.script import Script, compile_script
from mailyard.sieve.validate import EXTENSIONS

__all__ = [
    "EXTENSIONS",
    "Action",
    "Discard",
    "FileInto",
    "Keep",
    "Limits",
    "Redirect",
    "Reject",
    "Script",
    "SieveCompileError",
    "SieveContext",
    "SieveEnvelope",
    "SieveResult",
    "Vacation",
    "compile_script",
    "limits_from_settings",
    "run",
    "run_chain",
]


def run(script: Script, message: bytes, envelope: SieveEnvelope,
        context: SieveContext | None = None) -> SieveResult:
    """Run `script` over `message`; see the module docstring for the result."""
    from mailyard.sieve.interpreter import Interpreter

    return Interpreter(script, message, envelope, context).run()


def run_chain(scripts: list[Script], message: bytes, envelope: SieveEnvelope,
              context: SieveContext | None = None) -> SieveResult:
    """Run global-before, the user's script and global-after as one sequence.

    Each script runs on the message as the previous one left it (editheader); actions add
    up; the implicit keep is cancelled if any script cancelled it; `stop` in one script
    ends the chain (the shipped before-script files spam into Junk and stops, so the
    user's rules do not see it). A runtime error anywhere gives the clean fallback result
    (no actions, keep in INBOX).
    """
    actions: list = []
    implicit = True
    flags: tuple[str, ...] = ()
    current = message
    edited = False
    for script in scripts:
        result = run(script, current, envelope, context)
        if result.errors:
            return SieveResult([], Keep("INBOX"), result.errors)
        for action in result.actions:
            if action not in actions:
                actions.append(action)
        if result.implicit_keep is None:
            implicit = False
        else:
            flags = result.implicit_keep.flags
        if result.message is not None:
            current, edited = result.message, True
        if result.stopped:
            break
    keep = Keep("INBOX", flags) if implicit else None
    return SieveResult(actions, keep, [], current if edited else None)
