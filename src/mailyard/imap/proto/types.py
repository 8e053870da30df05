"""Typed nouns of the IMAP grammar: sequence sets, fetch attributes, search keys, store actions.

These are the values the parser produces and the operations consume. They are frozen and
know nothing of sockets or the store; `SequenceSet.select` resolves a set against the
sorted message numbers or UIDs of a mailbox.
"""

from __future__ import annotations

import bisect
import datetime as dt
from dataclasses import dataclass, field

STAR = 0  # `*` in a sequence set: the largest number in use (RFC 3501 §9 seq-number)


class ParseError(Exception):
    """A command the grammar does not accept; answered with BAD (or NO with a code)."""

    def __init__(self, message: str, tag: str = "*", code: str | None = None):
        super().__init__(message)
        self.tag = tag
        self.code = code


@dataclass(frozen=True)
class SequenceSet:
    """`1,3:5,7:*` — inclusive ranges; `STAR` (0) stands for `*`."""

    ranges: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        def one(n: int) -> str:
            return "*" if n == STAR else str(n)
        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)

    @classmethod
    def of(cls, numbers) -> SequenceSet:
        """A compact set covering `numbers` (any iterable of positive ints)."""
        ranges: list[tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if ranges and ranges[-1][1] == n - 1:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with `*` replaced by `largest` and each range ordered low to high."""
        out = []
        for a, b in self.ranges:
            a = largest if a == STAR else a
            b = largest if b == STAR else b
            out.append((a, b) if a <= b else (b, a))
        return out

    def select(self, sorted_values: list[int]) -> list[int]:
        """The members of `sorted_values` (ascending) that fall inside this set, ascending.

        `*` is the last value (RFC 3501 §6.4.8: for UIDs, the largest UID in use).
        """
        if not sorted_values:
            return []
        largest = sorted_values[-1]
        picked: set[int] = set()
        for lo, hi in self.bounds(largest):
            i = bisect.bisect_left(sorted_values, lo)
            j = bisect.bisect_right(sorted_values, hi)
            picked.update(sorted_values[i:j])
        return sorted(picked)

    def contains(self, value: int, largest: int) -> bool:
        return any(lo <= value <= hi for lo, hi in self.bounds(largest))


@dataclass(frozen=True)
class Section:
    """A BODY[...] section: part path (1.2.3), then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME."""

    part: tuple[int, ...] = ()
    text: str | None = None          # None, "HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT",
    fields: tuple[str, ...] = ()     # "TEXT", "MIME"

    def __str__(self) -> str:
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
            if self.fields:
                out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(frozen=True)
class FetchAttribute:
    """One FETCH item. `name` is the canonical upper-case item name (BODY for BODY[...])."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None   # <start.length>
    peek: bool = False

    def response_name(self) -> str:
        """The name this item carries in the FETCH response (RFC 3501 §7.4.2)."""
        if self.section is None:
            return self.name
        # BODY.PEEK[...] is answered as BODY[...]; a partial fetch as BODY[...]<start>
        out = f"{self.name}[{self.section}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out


@dataclass(frozen=True)
class SearchKey:
    """A node of the SEARCH criteria tree.

    kind: "all", "and" (children), "or" (two children), "not" (one child), "seqset" /
    "uid" (value: SequenceSet), "flag" (value: flag name, e.g. "\\Seen"), "keyword",
    "new", "old", "recent", "before"/"on"/"since" and "sentbefore"/"senton"/"sentsince"
    (value: date), "larger"/"smaller" (value: int), "header" (value: (field, string)),
    "body"/"text" (value: str), "modseq" (value: int), "younger"/"older" (value: seconds).
    """

    kind: str
    value: object = None
    children: tuple[SearchKey, ...] = ()


@dataclass(frozen=True)
class StoreAction:
    """STORE's item: replace (`=`), add (`+`) or remove (`-`) flags, maybe silently."""

    mode: str                       # "=", "+", "-"
    flags: tuple[str, ...]
    silent: bool = False
    unchanged_since: int | None = None   # CONDSTORE (RFC 7162 §3.1.3)


# -- commands ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    """A parsed command: tag, upper-case name, and the name's own arguments."""

    tag: str
    name: str
    uid: bool = False
    args: tuple = ()


@dataclass(frozen=True)
class FetchCommand:
    tag: str
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changed_since: int | None = None
    vanished: bool = False
    name: str = "FETCH"


@dataclass(frozen=True)
class SearchCommand:
    tag: str
    criteria: SearchKey
    uid: bool = False
    charset: str | None = None
    returns: tuple[str, ...] | None = None   # ESEARCH RETURN (...); None = classic SEARCH
    name: str = "SEARCH"


@dataclass(frozen=True)
class SortCommand:
    tag: str
    criteria: tuple[str, ...]               # e.g. ("REVERSE", "DATE", "SUBJECT")
    charset: str
    search: SearchKey
    uid: bool = False
    name: str = "SORT"


@dataclass(frozen=True)
class ThreadCommand:
    tag: str
    algorithm: str
    charset: str
    search: SearchKey
    uid: bool = False
    name: str = "THREAD"


@dataclass(frozen=True)
class StoreCommand:
    tag: str
    sequence: SequenceSet
    action: StoreAction
    uid: bool = False
    name: str = "STORE"


@dataclass(frozen=True)
class CopyCommand:
    tag: str
    sequence: SequenceSet
    mailbox: str
    uid: bool = False
    name: str = "COPY"   # or "MOVE"


@dataclass(frozen=True)
class AppendMessage:
    flags: tuple[str, ...]
    date: dt.datetime | None
    message: bytes


@dataclass(frozen=True)
class AppendCommand:
    tag: str
    mailbox: str
    messages: tuple[AppendMessage, ...]
    name: str = "APPEND"
    uid: bool = False


@dataclass(frozen=True)
class ListCommand:
    """LIST / LSUB, with RFC 5258 LIST-EXTENDED selection and return options."""

    tag: str
    reference: str
    patterns: tuple[str, ...]
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()
    name: str = "LIST"
    uid: bool = False
    extended: bool = False


@dataclass(frozen=True)
class SelectCommand:
    tag: str
    mailbox: str
    readonly: bool
    condstore: bool = False
    qresync: tuple | None = None   # (uidvalidity, modseq, known_uids|None)
    name: str = "SELECT"
    uid: bool = False


@dataclass(frozen=True)
class StatusCommand:
    tag: str
    mailbox: str
    items: tuple[str, ...]
    name: str = "STATUS"
    uid: bool = False


@dataclass(frozen=True)
class CreateCommand:
    tag: str
    mailbox: str
    special_use: tuple[str, ...] = field(default=())
    name: str = "CREATE"
    uid: bool = False
