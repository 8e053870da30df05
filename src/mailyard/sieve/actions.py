"""What a Sieve run decides: typed, frozen actions, the envelope in, the context hooks.

Everything here crosses the package line to `delivery`, so it is plain frozen dataclasses and
one small class of overridable hooks (`SieveContext`).
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Keep:
    """Store the message in a mailbox (keep, implicit keep, and fileinto all become this)."""

    mailbox: str = "INBOX"
    flags: tuple[str, ...] = ()
    create: bool = False
    copy: bool = False


@dataclass(frozen=True)
class FileInto(Keep):
    """`fileinto`: a store into a named mailbox."""


@dataclass(frozen=True)
class Redirect:
    """Forward the message to `address` (the domain lower-cased); `copy` keeps the
    implicit keep (RFC 3894)."""

    address: str
    copy: bool = False


@dataclass(frozen=True)
class Discard:
    """Silently drop the message (cancels the implicit keep only)."""


@dataclass(frozen=True)
class Reject:
    """`reject` (an MDN-style refusal) or, with `extended`, `ereject` (refuse in protocol)."""

    reason: str
    extended: bool = False


@dataclass(frozen=True)
class Vacation:
    """An auto-reply the engine decided to send (RFC 5230); `to` is the envelope sender.

    The memory check (`SieveContext.vacation_should_reply`) has already said yes.
    """

    seconds: int
    subject: str
    from_: str | None
    reason: str
    addresses: tuple[str, ...] = ()
    mime: bool = False
    handle: str = ""
    to: str = ""
    in_reply_to: str = ""


Action = Keep | Redirect | Discard | Reject | Vacation


@dataclass(frozen=True)
class SieveEnvelope:
    """The SMTP envelope of the message being delivered (RFC 5228 §5.4 `envelope`)."""

    sender: str = ""             # MAIL FROM; "" is the null sender
    recipient: str = ""          # RCPT TO of this delivery (after alias resolution: the user)
    orig_recipient: str = ""     # the address originally given (ORCPT or before aliasing)
    auth: str = ""               # the authenticated submitter, if any


@dataclass(frozen=True)
class SieveResult:
    """The outcome of a run. On a runtime error `actions` is empty, `errors` says why and
    `implicit_keep` is Keep("INBOX") — the message is never lost (RFC 5228 §2.10.6).

    `message` is the (possibly editheader-changed) message to store and forward; it is
    None when the script did not change it.
    """

    actions: list = field(default_factory=list)
    implicit_keep: Keep | None = None
    errors: list[str] = field(default_factory=list)
    message: bytes | None = None
    stopped: bool = False       # the script ended with `stop` (ends a run_chain too)

    @property
    def status(self) -> str:
        return "runtime_error" if self.errors else "ok"

    def stores(self) -> list[Keep]:
        """Every mailbox delivery, the implicit keep included."""
        out = [a for a in self.actions if isinstance(a, Keep)]
        if self.implicit_keep is not None:
            out.append(self.implicit_keep)
        return out


@dataclass(frozen=True)
class Limits:
    """Resource limits that stop hostile scripts (RFC 5228 §2.10.5 leaves them to us)."""

    max_actions: int = 64
    max_redirects: int = 4
    max_include_depth: int = 10
    max_includes: int = 50
    max_steps: int = 200_000       # interpreter steps (commands + tests + match attempts)
    max_header_edits: int = 100


def limits_from_settings(settings) -> Limits:
    """The `[sieve]` limits of a `Settings`."""
    return Limits(max_actions=settings.sieve.max_actions,
                  max_redirects=settings.sieve.max_redirects)


class SieveContext:
    """Hooks the engine calls for state it must not own. Subclass and override.

    The defaults keep memory in this object (fine for `mailyard sieve test` and unit tests):
    - `vacation_should_reply(key, seconds)`: True if no reply with this key was sent within
      `seconds`; remembers the reply when answering True (RFC 5230 §4.2 reply memory).
    - `duplicate_seen(id, seconds, last=False)`: True if `id` was seen within `seconds`;
      records it (RFC 7352 tracking).
    - `mailbox_exists(name)`: for `mailboxexists` (RFC 5490) — default: only INBOX.
    - `load_include(name, location)`: script text for `include` (location is "personal" or
      "global"); return None when there is no such script.
    - `user_addresses`: the user's own addresses (vacation's "is it addressed to me" check).
    - `now()`: the current time (aware datetime) for `currentdate` and the memories.
    """

    def __init__(self, user_addresses: tuple[str, ...] = (), *,
                 limits: Limits | None = None, now: _dt.datetime | None = None,
                 mailboxes: tuple[str, ...] = ("INBOX",)):
        self.user_addresses = tuple(user_addresses)
        self.limits = limits or Limits()
        self._now = now
        self._mailboxes = set(mailboxes)
        self._vacation: dict[str, float] = {}
        self._duplicates: dict[str, float] = {}

    def now(self) -> _dt.datetime:
        return self._now or _dt.datetime.now(_dt.UTC).astimezone()

    def _clock(self) -> float:
        return self._now.timestamp() if self._now else time.time()

    def vacation_should_reply(self, key: str, seconds: int) -> bool:
        last = self._vacation.get(key)
        now = self._clock()
        if last is not None and now - last < seconds:
            return False
        self._vacation[key] = now
        return True

    def duplicate_seen(self, id: str, seconds: int, last: bool = False) -> bool:
        """RFC 7352 §3: the first sighting starts the period; with `last`, every one does."""
        stamp = self._duplicates.get(id)
        now = self._clock()
        seen = stamp is not None and now - stamp < seconds
        if not seen or last:
            self._duplicates[id] = now
        return seen

    def mailbox_exists(self, name: str) -> bool:
        return name in self._mailboxes

    def load_include(self, name: str, location: str) -> str | None:
        return None
