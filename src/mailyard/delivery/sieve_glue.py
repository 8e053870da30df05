"""Sieve at delivery time: which scripts run, and what their result means for one user.

Theory of operation: for each local user a message is delivered to, `plan_delivery` runs the
scripts in order — the global `[sieve] before` script, the user's active script (stored by
ManageSieve under data_dir/sieve/<user>/, see `mailyard.sieve.storage`), the global
`[sieve] after` script — through the pure engine (`mailyard.sieve.run_chain`), and turns the
result into a `DeliveryPlan`: the folders (with flags) to store into, addresses to redirect
to, a rejection reason, vacation replies. It touches no mailbox and sends nothing; the agent
carries the plan out.

The shipped default: when `[sieve] before` is empty and `[delivery] spam_to_junk` is on (the
default), a message whose `X-Spam-Flag` is `YES` is filed into Junk and no other script runs
for it — as if the global before script were

    require "fileinto";
    if header :is "X-Spam-Flag" "YES" { fileinto "Junk"; stop; }

and `stop` ended the whole chain. Spam therefore never triggers a user's vacation reply or
redirect. An operator who wants other behaviour sets `[sieve] before`.

Failure is never loss (RFC 5228 §2.10.6): a script that does not compile is skipped and
logged; a runtime error or a resource limit gives the engine's fallback (keep in INBOX); if
the engine itself is not installed, or raises, the message is kept in INBOX. A message that
already carries `Delivered-To: <this user>` is in a forwarding loop: its redirects are dropped
and it is kept.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.delivery.headers import header_values
from mailyard.log import event, get_logger

log = get_logger("delivery")

try:  # the engine is another package; delivery works (INBOX only) without it
    from mailyard import sieve as sieve_engine
    from mailyard.sieve import storage as sieve_storage
except ImportError:  # pragma: no cover - only before the sieve package lands
    sieve_engine = None
    sieve_storage = None

JUNK = "Junk"
INBOX = "INBOX"
_CACHE_SIZE = 256


@dataclass(frozen=True)
class StoreAction:
    """Store a copy in `folder` with IMAP `flags` (system flags and keywords mixed)."""

    folder: str
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class VacationReply:
    """An auto-reply to send (the engine has already applied RFC 3834 and the memory)."""

    to: str
    from_: str
    subject: str
    reason: str
    mime: bool
    in_reply_to: str


@dataclass(frozen=True)
class DeliveryPlan:
    """What to do with one user's copy of a message."""

    stores: tuple[StoreAction, ...] = (StoreAction(INBOX),)
    redirects: tuple[str, ...] = ()
    reject: str | None = None
    vacations: tuple[VacationReply, ...] = ()
    message: bytes | None = None  # edited by editheader; None = unchanged
    notes: tuple[str, ...] = field(default=(), compare=False)  # errors, for the log line

    @property
    def discarded(self) -> bool:
        return not self.stores and not self.redirects and self.reject is None


KEEP_INBOX = DeliveryPlan()


# -- scripts -----------------------------------------------------------------------------------
class ScriptCache:
    """Compiled scripts keyed by their text (bounded LRU), shared by all deliveries."""

    def __init__(self, size: int = _CACHE_SIZE):
        self.size = size
        self._scripts: OrderedDict[tuple[str, str], object] = OrderedDict()

    def compile(self, text: str, name: str):
        """The compiled script; raises the engine's SieveCompileError."""
        key = (name, text)
        script = self._scripts.get(key)
        if script is None:
            script = sieve_engine.compile_script(text, name=name)
            self._scripts[key] = script
            if len(self._scripts) > self.size:
                self._scripts.popitem(last=False)
        else:
            self._scripts.move_to_end(key)
        return script


def _read_global(path: str) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        event(log, "global sieve script unreadable; skipped", path=path, error=str(exc),
              level=30)
        return None


def is_spam(message: bytes) -> bool:
    return any(v.strip().upper() == "YES" for v in header_values(message, "X-Spam-Flag"))


def sieve_folder_name(mailbox: str) -> str:
    """Sieve mailbox names may use "/" or "." between levels; the store uses "."."""
    return mailbox.replace("/", ".")


def plan_delivery(settings, data_dir: Path, user: str, message: bytes, sieve_envelope,
                  context, cache: ScriptCache) -> DeliveryPlan:
    """Run the script chain for `user` over `message` (see the module docstring)."""
    if not settings.sieve.before and settings.delivery.spam_to_junk and is_spam(message):
        return DeliveryPlan(stores=(StoreAction(JUNK),))
    if sieve_engine is None:
        return KEEP_INBOX
    sources: list[tuple[str, str]] = []
    before = _read_global(settings.sieve.before)
    if before is not None:
        sources.append(("global:before", before))
    personal = sieve_storage.active_script_text(data_dir, user)
    if personal is not None:
        sources.append((f"personal:{user}", personal))
    after = _read_global(settings.sieve.after)
    if after is not None:
        sources.append(("global:after", after))
    if not sources:
        return KEEP_INBOX
    notes: list[str] = []
    scripts = []
    for name, text in sources:
        try:
            scripts.append(cache.compile(text, name))
        except sieve_engine.SieveCompileError as exc:
            notes.append(f"{name}: {exc}")
            event(log, "sieve script does not compile; skipped", user=user, script=name,
                  error=str(exc), level=30)
    if not scripts:
        return DeliveryPlan(notes=tuple(notes))
    try:
        result = sieve_engine.run_chain(scripts, message, sieve_envelope, context)
    except Exception as exc:  # a bug in the engine must not lose mail
        log.exception("sieve engine failed; keeping in INBOX (user=%s)", user)
        return DeliveryPlan(notes=tuple(notes) + (f"engine error: {exc!r}",))
    if result.errors:
        event(log, "sieve runtime error; keeping in INBOX", user=user,
              error="; ".join(result.errors), level=30)
        return DeliveryPlan(notes=tuple(notes) + tuple(result.errors))
    return _translate(result, user, message, notes)


def _translate(result, user: str, message: bytes, notes: list[str]) -> DeliveryPlan:
    stores: list[StoreAction] = []
    redirects: list[str] = []
    vacations: list[VacationReply] = []
    reject: str | None = None
    for action in result.actions:
        if isinstance(action, sieve_engine.Keep):
            store = StoreAction(sieve_folder_name(action.mailbox), tuple(action.flags))
            if store not in stores:
                stores.append(store)
        elif isinstance(action, sieve_engine.Redirect):
            if action.address not in redirects:
                redirects.append(action.address)
        elif isinstance(action, sieve_engine.Reject):
            reject = action.reason
        elif isinstance(action, sieve_engine.Vacation):
            vacations.append(VacationReply(
                to=action.to, from_=action.from_ or user, subject=action.subject,
                reason=action.reason, mime=action.mime, in_reply_to=action.in_reply_to))
        # Discard: nothing to do; it only cancelled the implicit keep.
    if result.implicit_keep is not None:
        keep = StoreAction(INBOX, tuple(result.implicit_keep.flags))
        if keep not in stores:
            stores.append(keep)
    if redirects and _in_loop(message, user):
        event(log, "forwarding loop: redirects dropped, message kept", user=user, level=30)
        notes.append("forwarding loop")
        redirects = []
        if not stores:
            stores.append(StoreAction(INBOX))
    if reject is not None:
        # RFC 5429 §2.1: a rejected message is neither stored nor forwarded.
        return DeliveryPlan(stores=(), redirects=(), reject=reject, notes=tuple(notes))
    return DeliveryPlan(stores=tuple(stores), redirects=tuple(redirects),
                        vacations=tuple(vacations), message=result.message,
                        notes=tuple(notes))


def _in_loop(message: bytes, user: str) -> bool:
    """True if the message (as received) already passed through this user: a Delivered-To
    naming the user (with or without +detail) was added by an earlier delivery."""
    user = user.lower()
    names = [v.strip().strip("<>").lower() for v in header_values(message, "Delivered-To")]
    own = user.split("@")[0].split("+")[0], user.rpartition("@")[2]
    return any((n.split("@")[0].split("+")[0], n.rpartition("@")[2]) == own for n in names)


# -- the context the engine calls back into ------------------------------------------------
def make_context(settings, data_dir: Path, user: str, user_addresses: tuple[str, ...],
                 mailbox_exists):
    """The sieve package's `UserSieveContext` (per-user vacation and duplicate memories on
    disk, includes from storage), asking the Maildir store whether a mailbox exists."""
    if sieve_engine is None:
        return None
    from mailyard.sieve.usercontext import UserSieveContext

    def exists(name: str) -> bool:
        try:
            return mailbox_exists(sieve_folder_name(name))
        except ValueError:  # a hostile name exists nowhere
            return False

    return UserSieveContext(data_dir, user,
                            global_dir=getattr(settings.sieve, "global_dir", "") or None,
                            mailbox_exists=exists, user_addresses=user_addresses,
                            limits=sieve_engine.limits_from_settings(settings))


def active_script_exists(data_dir: Path, user: str) -> bool:
    if sieve_storage is None:
        return False
    return sieve_storage.active_script_name(data_dir, user) is not None


__all__ = [
    "KEEP_INBOX",
    "DeliveryPlan",
    "ScriptCache",
    "StoreAction",
    "VacationReply",
    "is_spam",
    "make_context",
    "plan_delivery",
    "sieve_folder_name",
]
