"""The Sieve interpreter: a compiled script + a message + an envelope → `SieveResult`.

Theory of operation: `Interpreter.run` walks the checked syntax tree. Every command and test
costs one step and every value compared one more; past `Limits.max_steps` the run stops with
a runtime error, as it does past the action, redirect, include-depth and header-edit limits.
Control flow (`stop`, `return`) and failures are exceptions. Actions accumulate in order;
duplicates are merged (RFC 5228 §2.10.3: a mailbox or an address receives the message once).
Vacation replies are only decided after the script finished cleanly, so the reply memory is
not touched by a run that fails. On any runtime error the actions are dropped and the message
is kept in INBOX (RFC 5228 §2.10.6) — a hostile script can never lose mail.
"""

from __future__ import annotations

import hashlib
import re

from mailyard.sieve.actions import (
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
)
from mailyard.sieve.grammar import Command, SieveCompileError
from mailyard.sieve.match import MatchBudgetExceeded, glob_match, match_value
from mailyard.sieve.message import SieveMessage
from mailyard.sieve.script import Script, compile_script
from mailyard.sieve.tests_eval import SieveRuntimeError, TestEvaluator
from mailyard.sieve.validate import ADDRESS_RE

MAX_VARIABLE_LENGTH = 64 * 1024
# RFC 5293 §6/§9: trace and auto-reply fields must not be removed (adding is allowed,
# as in Dovecot).
PROTECTED_HEADERS = ("received", "auto-submitted")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|[0-9]+)\}")
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}
_LIST_HEADERS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                 "list-owner", "list-archive")


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Frame:
    """Per-script state: its variables and the names it declared `global`."""

    def __init__(self, script: Script):
        self.script = script
        self.variables: dict[str, str] = {}
        self.globals: set[str] = set()
        self.uses_variables = "variables" in script.required


class Interpreter(TestEvaluator):
    """One run of one script (and what it includes) over one message."""

    def __init__(self, script: Script, message: bytes, envelope: SieveEnvelope,
                 context: SieveContext | None = None):
        self.script = script
        self.message = SieveMessage(message)
        self.envelope = envelope
        self.context = context or SieveContext()
        self.limits: Limits = getattr(self.context, "limits", None) or Limits()
        self.steps = 0
        self.actions: list = []
        self.vacations: list[Vacation] = []
        self.implicit_keep = True
        self.flags: list[str] = []           # imap4flags internal variable
        self.global_vars: dict[str, str] = {}
        self.match_vars: list[str] = []
        self.frames: list[_Frame] = []
        self.included: set[tuple[str, str]] = set()
        self.include_count = 0
        self.edits = 0
        self.cache: dict[tuple[str, str], Script] = {}
        self.where = script.name   # "<script>: line N" of the command running, for errors

    # -- running -------------------------------------------------------------------------
    def run(self) -> SieveResult:
        stopped = False
        try:
            try:
                self.run_script(self.script)
            except _Stop:
                stopped = True
            vacations = [v for v in self.vacations if self.context.vacation_should_reply(
                self._vacation_key(v), v.seconds)]
        except (SieveRuntimeError, MatchBudgetExceeded) as exc:
            return SieveResult([], Keep("INBOX"), [f"{self.where}: {exc}"])
        except RecursionError:
            return SieveResult([], Keep("INBOX"), [f"{self.where}: script nested too deeply"])
        actions = self.actions + vacations
        keep = Keep("INBOX", tuple(self.flags)) if self.implicit_keep else None
        edited = self.message.to_bytes() if self.message.edited else None
        return SieveResult(actions, keep, [], edited, stopped)

    def run_script(self, script: Script) -> None:
        self.frames.append(_Frame(script))
        try:
            self.block(script.commands)
        except _Return:
            pass
        finally:
            self.frames.pop()

    def step(self, cost: int = 1) -> None:
        self.steps += cost
        if self.steps > self.limits.max_steps:
            raise SieveRuntimeError(f"script exceeded its budget of {self.limits.max_steps} "
                                    f"steps")

    def block(self, commands: list[Command]) -> None:
        i, n = 0, len(commands)
        while i < n:
            cmd = commands[i]
            if cmd.name == "if":
                taken = False
                j = i
                while j < n and (j == i or commands[j].name in ("elsif", "else")):
                    branch = commands[j]
                    self.where = f"{self.frame.script.name}: line {branch.line}"
                    if not taken and (branch.name == "else" or self.test(branch.tests[0])):
                        taken = True
                        self.block(branch.block)
                    j += 1
                i = j
                continue
            self.step()
            self.where = f"{self.frame.script.name}: line {cmd.line}"
            getattr(self, "c_" + cmd.name)(cmd)
            i += 1

    # -- variables (RFC 5229) ------------------------------------------------------------
    @property
    def frame(self) -> _Frame:
        return self.frames[-1]

    def expand(self, value: str) -> str:
        if not self.frame.uses_variables or "${" not in value:
            return value
        out = _VARIABLE.sub(lambda m: self.get_variable(m.group(1)), value)
        return out[:MAX_VARIABLE_LENGTH]

    def get_variable(self, name: str) -> str:
        if name.isdigit():
            index = int(name)
            return self.match_vars[index] if index < len(self.match_vars) else ""
        lname = name.lower()
        if lname.startswith("global."):
            return self.global_vars.get(lname[7:], "")
        if lname in self.frame.globals:
            return self.global_vars.get(lname, "")
        return self.frame.variables.get(lname, "")

    def set_variable(self, name: str, value: str) -> None:
        lname = name.lower()
        value = value[:MAX_VARIABLE_LENGTH]
        if lname.startswith("global."):
            self.global_vars[lname[7:]] = value
        elif lname in self.frame.globals:
            self.global_vars[lname] = value
        else:
            self.frame.variables[lname] = value

    def set_match_variables(self, captures: list[str]) -> None:
        if self.frame.uses_variables:
            self.match_vars = captures

    def flags_of(self, name: str | None) -> list[str]:
        return list(self.flags) if name is None else self.get_variable(name).split()

    # -- actions -------------------------------------------------------------------------
    def add_action(self, action) -> None:
        if isinstance(action, Keep):
            for i, old in enumerate(self.actions):
                if isinstance(old, Keep) and old.mailbox == action.mailbox:
                    # One delivery per mailbox; the flags of the latest store win (as in
                    # Dovecot: they are the flags in force when the script decided last).
                    self.actions[i] = type(old)(old.mailbox, action.flags,
                                                old.create or action.create,
                                                old.copy and action.copy)
                    return
        if isinstance(action, Redirect):
            # RFC 5228 §2.10.3: one redirect per address; local parts are case-sensitive
            # (RFC 5321 §2.4), domains are not.
            if any(isinstance(a, Redirect) and _address_key(a.address) ==
                   _address_key(action.address) for a in self.actions):
                return
            if sum(isinstance(a, Redirect) for a in self.actions) >= self.limits.max_redirects:
                raise SieveRuntimeError(f"too many redirects (limit "
                                        f"{self.limits.max_redirects})")
        # RFC 5429 §2.1/§2.2: reject refuses the message, so it cannot also be delivered
        # (keep, fileinto, redirect — even :copy) or answered (vacation); as in Dovecot.
        rejecting = any(isinstance(a, Reject) for a in self.actions)
        if isinstance(action, Reject):
            if rejecting:
                raise SieveRuntimeError("more than one reject/ereject")
            if any(isinstance(a, (Keep, Redirect)) for a in self.actions) or self.vacations:
                raise SieveRuntimeError("reject conflicts with an earlier keep, fileinto, "
                                        "redirect or vacation")
        elif rejecting and isinstance(action, (Keep, Redirect, Vacation)):
            raise SieveRuntimeError("keep, fileinto, redirect and vacation conflict with "
                                    "reject")
        if len(self.actions) + len(self.vacations) >= self.limits.max_actions:
            raise SieveRuntimeError(f"too many actions (limit {self.limits.max_actions})")
        self.actions.append(action)

    def _store_flags(self, cmd: Command) -> tuple[str, ...]:
        if "flags" in cmd.tagged:
            return tuple(_flag_list([self.expand(f) for f in cmd.tagged["flags"]]))
        return tuple(self.flags)

    def c_require(self, cmd: Command) -> None:
        pass

    def c_stop(self, cmd: Command) -> None:
        raise _Stop

    def c_keep(self, cmd: Command) -> None:
        self.add_action(Keep("INBOX", self._store_flags(cmd)))
        self.implicit_keep = False

    def c_fileinto(self, cmd: Command) -> None:
        mailbox = self.expand(cmd.positional[0])
        if not mailbox or "\x00" in mailbox:
            raise SieveRuntimeError(f"invalid mailbox name {mailbox!r}")
        copy = bool(cmd.tagged.get("copy"))
        self.add_action(FileInto(mailbox, self._store_flags(cmd),
                                 bool(cmd.tagged.get("create")), copy))
        if not copy:
            self.implicit_keep = False

    def c_redirect(self, cmd: Command) -> None:
        address = self.expand(cmd.positional[0]).strip()
        # RFC 5228 §4.2: the argument must be a valid address.
        if not ADDRESS_RE.fullmatch(address):
            raise SieveRuntimeError(f"redirect: invalid address {address!r}")
        copy = bool(cmd.tagged.get("copy"))
        self.add_action(Redirect(_address_key(address), copy))
        if not copy:
            self.implicit_keep = False

    def c_discard(self, cmd: Command) -> None:
        self.implicit_keep = False
        if not any(isinstance(a, Discard) for a in self.actions):
            self.add_action(Discard())

    def c_reject(self, cmd: Command, extended: bool = False) -> None:
        self.add_action(Reject(self.expand(cmd.positional[0]), extended))
        self.implicit_keep = False

    def c_ereject(self, cmd: Command) -> None:
        self.c_reject(cmd, extended=True)

    # -- imap4flags (RFC 5232) -----------------------------------------------------------
    def _flag_command(self, cmd: Command, op: str) -> None:
        if len(cmd.positional) == 2:
            name, flags = cmd.positional
            name = self.expand(name)
            current = self.get_variable(name).split()
        else:
            name, flags = None, cmd.positional[0]
            current = list(self.flags)
        given = _flag_list([self.expand(f) for f in flags])
        if op == "set":
            result = given
        elif op == "add":
            result = _flag_list(current + given)
        else:
            drop = {f.lower() for f in given}
            result = [f for f in current if f.lower() not in drop]
        if name is None:
            self.flags = result
        else:
            self.set_variable(name, " ".join(result))

    def c_setflag(self, cmd: Command) -> None:
        self._flag_command(cmd, "set")

    def c_addflag(self, cmd: Command) -> None:
        self._flag_command(cmd, "add")

    def c_removeflag(self, cmd: Command) -> None:
        self._flag_command(cmd, "remove")

    # -- variables -----------------------------------------------------------------------
    def c_set(self, cmd: Command) -> None:
        name, value = cmd.positional
        value = self.expand(value)
        # RFC 5229 §4.1: modifiers apply from the highest precedence to the lowest.
        mods = [m for m in ("lower", "upper", "lowerfirst", "upperfirst", "quotewildcard",
                            "quoteregex", "length") if cmd.tagged.get(m)]
        for mod in mods:
            # Case changes are ASCII-only, as Dovecot does (scripts behave alike there).
            if mod == "lower":
                value = value.translate(_ASCII_LOWER)
            elif mod == "upper":
                value = value.translate(_ASCII_UPPER)
            elif mod == "lowerfirst":
                value = value[:1].translate(_ASCII_LOWER) + value[1:]
            elif mod == "upperfirst":
                value = value[:1].translate(_ASCII_UPPER) + value[1:]
            elif mod == "quotewildcard":
                value = re.sub(r"([*?\\])", r"\\\1", value)
            elif mod == "quoteregex":  # draft-ietf-sieve-regex §4
                value = re.sub(r"([\\^$.\[\]|()?*+{}])", r"\\\1", value)
            elif mod == "length":
                value = str(len(value))
        self.set_variable(name, value)

    # -- vacation (RFC 5230, RFC 3834) ---------------------------------------------------
    def c_vacation(self, cmd: Command) -> None:
        if self.vacations:
            raise SieveRuntimeError("more than one vacation action")
        if any(isinstance(a, Reject) for a in self.actions):
            raise SieveRuntimeError("vacation conflicts with reject")
        tagged = cmd.tagged
        if "seconds" in tagged:
            seconds = max(0, tagged["seconds"])
        else:
            seconds = max(1, tagged.get("days", 7)) * 86400  # RFC 5230 §4.1: at least 1 day
        reason = self.expand(cmd.positional[0])
        addresses = tuple(self.expand(a) for a in tagged.get("addresses", []))
        subject = self.expand(tagged["subject"]) if "subject" in tagged else None
        from_ = self.expand(tagged["from"]) if "from" in tagged else None
        handle = self.expand(tagged["handle"]) if "handle" in tagged else None
        if not self._vacation_allowed(addresses):
            return
        original = (self.message.header_values("Subject") or [""])[0]
        if subject is None:
            subject = "Auto: " + original if original else "Automated reply"
        if handle is None:
            # RFC 5230 §4.2: without :handle, a reply differing in these is a new reply.
            digest = hashlib.sha256("\x00".join(
                [reason, subject, from_ or "", str(bool(tagged.get("mime")))]).encode(
                    "utf-8", "surrogateescape")).hexdigest()
            handle = digest[:32]
        message_id = (self.message.header_values("Message-ID") or [""])[0].strip()
        vac = Vacation(seconds, subject, from_, reason, addresses, bool(tagged.get("mime")),
                       handle, self.envelope.sender.strip().strip("<>"), message_id)
        if len(self.actions) + 1 > self.limits.max_actions:
            raise SieveRuntimeError(f"too many actions (limit {self.limits.max_actions})")
        self.vacations.append(vac)

    def _vacation_allowed(self, extra_addresses: tuple[str, ...]) -> bool:
        """RFC 5230 §4.5/§4.6 and RFC 3834 §2: when an auto-reply must not be sent."""
        sender = self.envelope.sender.strip().strip("<>").lower()
        if not sender or "@" not in sender:
            return False   # null reverse-path: never answer bounces
        local = sender.rsplit("@", 1)[0]
        if (local in ("mailer-daemon", "listserv", "majordomo", "postmaster")
                or local.startswith(("owner-", "bounce")) or local.endswith("-request")
                or "-bounces" in local):
            return False
        msg = self.message
        for value in msg.header_values("Auto-Submitted"):
            if value.strip().lower().split(";")[0].strip() != "no":
                return False
        for value in msg.header_values("Precedence"):
            if value.strip().lower() in ("bulk", "junk", "list"):
                return False
        if any(msg.has_header(h) for h in _LIST_HEADERS):
            return False
        mine = {a.lower() for a in (self.context.user_addresses + extra_addresses) if a}
        for addr in (self.envelope.recipient, self.envelope.orig_recipient):
            addr = addr.strip().strip("<>").lower()
            if addr:
                mine.add(addr)
                user, _, domain = addr.rpartition("@")
                mine.add(user.split("+")[0] + "@" + domain)
        if sender in mine:
            return False  # never answer ourselves
        for header in ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"):
            for addrs in msg.addresses(header):
                for addr in addrs:
                    addr = addr.lower()
                    user, _, domain = addr.rpartition("@")
                    if addr in mine or (user.split("+")[0] + "@" + domain) in mine:
                        return True
        return False  # RFC 5230 §4.5: not addressed to the user: no reply

    def _vacation_key(self, vac: Vacation) -> str:
        return f"{vac.handle}\x00{vac.to.lower()}"

    # -- editheader (RFC 5293) -----------------------------------------------------------
    def _count_edit(self) -> None:
        self.edits += 1
        if self.edits > self.limits.max_header_edits:
            raise SieveRuntimeError(f"too many header edits (limit "
                                    f"{self.limits.max_header_edits})")

    def c_addheader(self, cmd: Command) -> None:
        name, value = (self.expand(p) for p in cmd.positional)
        if not re.fullmatch(r"[!-9;-~]+", name):
            raise SieveRuntimeError(f"addheader: invalid header field name {name!r}")
        self._count_edit()
        self.message.add_header(name, value, bool(cmd.tagged.get("last")))

    def c_deleteheader(self, cmd: Command) -> None:
        name = self.expand(cmd.positional[0])
        patterns = [self.expand(p) for p in cmd.positional[1]] if len(cmd.positional) > 1 \
            else None
        self._count_edit()
        if name.lower() in PROTECTED_HEADERS:
            return
        tagged = cmd.tagged
        match = tagged.get("match", "is")
        comparator = tagged.get("comparator", "i;ascii-casemap")
        index = tagged.get("index")

        def keep(position: int, count: int, value: str) -> bool:
            self.step()
            if index is not None:
                wanted = count - index + 1 if tagged.get("last") else index
                if position != wanted:
                    return True
            if patterns is None:
                return False
            if match == "count":
                return True
            return not any(match_value(value, p, match, comparator, tagged.get("relation"))
                           for p in patterns)

        self.message.delete_header(name, keep)

    # -- include (RFC 6609) --------------------------------------------------------------
    def c_include(self, cmd: Command) -> None:
        name = self.expand(cmd.positional[0])
        location = "global" if cmd.tagged.get("global") else "personal"
        key = (location, name)
        if any(f.script.name == f"{location}:{name}" for f in self.frames):
            raise SieveRuntimeError(f"include: script {name!r} includes itself (recursion)")
        if cmd.tagged.get("once") and key in self.included:
            return
        if len(self.frames) > self.limits.max_include_depth:
            raise SieveRuntimeError(f"include nested deeper than "
                                    f"{self.limits.max_include_depth}")
        self.include_count += 1
        if self.include_count > self.limits.max_includes:
            raise SieveRuntimeError(f"more than {self.limits.max_includes} includes")
        script = self.cache.get(key)
        if script is None:
            if "/" in name or name in ("", ".", ".."):
                raise SieveRuntimeError(f"include: invalid script name {name!r}")
            text = self.context.load_include(name, location)
            if text is None:
                if cmd.tagged.get("optional"):
                    return
                raise SieveRuntimeError(f"include: no {location} script {name!r}")
            try:
                script = compile_script(text, name=f"{location}:{name}")
            except SieveCompileError as exc:
                raise SieveRuntimeError(f"include {name!r}: {exc}") from None
            self.cache[key] = script
        self.included.add(key)
        self.run_script(script)

    def c_return(self, cmd: Command) -> None:
        raise _Return

    def c_global(self, cmd: Command) -> None:
        for name in cmd.positional[0]:
            self.frame.globals.add(self.expand(name).lower())


def _address_key(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def _flag_list(values: list[str]) -> list[str]:
    """Split space-separated flags and drop case-insensitive duplicates (RFC 5232 §3)."""
    seen: dict[str, str] = {}
    for value in values:
        for flag in value.split():
            seen.setdefault(flag.lower(), flag)
    return list(seen.values())


__all__ = ["Interpreter", "SieveRuntimeError", "glob_match"]
