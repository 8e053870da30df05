"""A session's view of one folder: `Folder`, with `MessageInfo` and `Changes`.

Theory of operation: a `Folder` is what one IMAP or POP3 session holds while a folder is
selected. It keeps a snapshot of the messages as of its last `refresh()`, so sequence numbers
stay stable between refreshes, and `refresh()` reports exactly what changed since: new UIDs,
expunged UIDs and UIDs whose flags changed, whoever made the change (this session, another
session, another process, or a foreign tool writing the Maildir). Changes this session makes
itself through `store_flags` and `expunge` update the snapshot at once and are not reported
again. All methods block on file I/O: call them from `asyncio.to_thread` in async code.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from mailyard.maildir.errors import FolderNotFound, MessageGone
from mailyard.maildir.files import (
    SYSTEM_FLAGS,
    fsync_dir_shared,
    read_file,
    to_crlf,
    write_tmp,
)
from mailyard.maildir.index import FolderIndex, Row
from mailyard.maildir.watch import FolderWatch

if TYPE_CHECKING:
    from mailyard.maildir.store import MailStore


_FLAG_SETS: dict[str, frozenset] = {"": frozenset()}
_FLAG_SETS_MAX = 4096


def _flag_set(text: str) -> frozenset:
    """The frozenset of a space-separated flags column, shared between messages (a folder
    has few distinct combinations; one set each instead of one per message)."""
    found = _FLAG_SETS.get(text)
    if found is None:
        found = frozenset(text.split())
        if len(_FLAG_SETS) < _FLAG_SETS_MAX:
            _FLAG_SETS[text] = found
    return found


class MessageInfo(NamedTuple):
    """One message as the index knows it (immutable; a tuple, so a snapshot of a big folder
    costs about a hundred bytes per message and loads without per-field Python calls).

    `size` is RFC822.SIZE (the message with CRLF line ends, which is how `read()` returns
    it); `internal_date` is seconds since the epoch (the file's mtime); `flags` are IMAP
    system flags (\\Seen \\Answered \\Flagged \\Deleted \\Draft), `keywords` everything else
    ($Forwarded, $Junk, user keywords); `filename` is relative to the folder directory.
    """

    uid: int
    size: int
    internal_date: float
    flags: frozenset
    keywords: frozenset
    modseq: int
    filename: str

    @property
    def all_flags(self) -> frozenset:
        return self.flags | self.keywords

    @classmethod
    def from_row(cls, row: Row) -> MessageInfo:
        uid, _base, filename, size, internal_date, flags, keywords, modseq = row
        return _new_info(cls, (uid, size, internal_date, _flag_set(flags), _flag_set(keywords),
                               modseq, filename))


_new_info = tuple.__new__


@dataclass(frozen=True)
class Changes:
    """What `Folder.refresh()` found changed since the previous refresh (UIDs ascending)."""

    new: tuple[int, ...] = ()
    expunged: tuple[int, ...] = ()
    flags_changed: tuple[int, ...] = ()
    uid_validity_changed: bool = False

    def __bool__(self) -> bool:
        return bool(self.new or self.expunged or self.flags_changed or self.uid_validity_changed)


# RFC 3501 §9: atom-specials (flag-keyword = atom).
_ATOM_SPECIALS = set('(){%*"\\]')


def split_flags(flags: Iterable[str]) -> tuple[frozenset, frozenset]:
    """Split IMAP flags into (system flags, keywords); refuses unknown \\flags and bad atoms.

    \\Recent is accepted and ignored (it cannot be stored, RFC 3501 §2.3.2).
    """
    system, keywords = set(), set()
    for flag in flags:
        atom = flag[1:] if isinstance(flag, str) and flag.startswith("\\") else flag
        if not isinstance(atom, str) or not atom or _ATOM_SPECIALS.intersection(atom) \
                or any(ord(c) < 0x21 or ord(c) > 0x7E for c in atom):
            raise ValueError(f"invalid flag {flag!r}")
        if flag.startswith("\\"):
            canonical = next((f for f in SYSTEM_FLAGS if f.lower() == flag.lower()), None)
            if canonical is None:
                if flag.lower() == "\\recent":
                    continue
                raise ValueError(f"unknown system flag {flag!r}")
            system.add(canonical)
        else:
            keywords.add(flag)
    return frozenset(system), frozenset(keywords)


class Folder:
    """A selected folder: see the module docstring. Made by `MailStore.open(name)`."""

    def __init__(self, store: MailStore, name: str, path: Path, index: FolderIndex):
        self.store = store
        self.name = name
        self.path_dir = path
        self._sdir = str(path) + os.sep   # string prefix: pathlib is slow on hot paths
        self._index = index
        self._messages: dict[int, MessageInfo] = {}
        self._order: list[int] | None = None
        self._seen_modseq = 0
        self.uid_validity = 0
        self.uid_next = 1
        self.highest_modseq = 0
        self.refresh()

    # -- the view ----------------------------------------------------------------------------
    def _live_index(self) -> FolderIndex:
        """The folder's index; FolderNotFound once the folder was deleted or renamed away."""
        if self._index.closed:
            if not os.path.isdir(self.path_dir / "cur"):
                raise FolderNotFound(f"folder {self.name!r} no longer exists")
            self._index = self.store._index(self.path_dir)
        return self._index

    def refresh(self) -> Changes:
        """Pick up every change since the last refresh (files added/removed/renamed too).

        Raises FolderNotFound when the folder was deleted or renamed meanwhile.
        """
        index = self._live_index()
        try:
            index.sync()
        except FileNotFoundError:
            raise FolderNotFound(f"folder {self.name!r} no longer exists") from None
        with index.lock:
            uid_validity = index.meta("uid_validity")
            if uid_validity != self.uid_validity:
                first = self.uid_validity == 0
                rows = index.rows()
                fs, cls = _flag_set, MessageInfo
                self._messages = {
                    r[0]: _new_info(cls, (r[0], r[3], r[4], fs(r[5]), fs(r[6]), r[7], r[2]))
                    for r in rows}
                self._order = None
                self.uid_validity = uid_validity
                self.uid_next = index.meta("uid_next")
                self.highest_modseq = self._seen_modseq = index.meta("highest_modseq")
                return Changes(new=tuple(sorted(self._messages)) if not first else (),
                               uid_validity_changed=not first)
            rows, gone = index.changed_since(self._seen_modseq)
            self.uid_next = index.meta("uid_next")
            self.highest_modseq = self._seen_modseq = index.meta("highest_modseq")
        new, changed, expunged = [], [], []
        for uid in gone:
            if self._messages.pop(uid, None) is not None:
                expunged.append(uid)
        for row in rows:
            info = MessageInfo.from_row(row)
            old = self._messages.get(info.uid)
            self._messages[info.uid] = info
            if old is None:
                new.append(info.uid)
            elif old.modseq != info.modseq and old.all_flags != info.all_flags:
                changed.append(info.uid)
        if new or expunged:
            self._order = None
        return Changes(new=tuple(new), expunged=tuple(expunged), flags_changed=tuple(changed))

    def messages(self) -> list[MessageInfo]:
        """The snapshot as of the last refresh, in UID order (sequence number = index + 1)."""
        return [self._messages[uid] for uid in self.uids()]

    def uids(self) -> list[int]:
        if self._order is None:
            self._order = sorted(self._messages)
        return self._order

    def __len__(self) -> int:
        return len(self._messages)

    def lookup(self, uid: int) -> MessageInfo | None:
        """The snapshot's MessageInfo of a UID, or None (no exception: hot paths)."""
        return self._messages.get(uid)

    def get(self, uid: int) -> MessageInfo:
        try:
            return self._messages[uid]
        except KeyError:
            raise MessageGone(f"no message with UID {uid} in {self.name}") from None

    # -- message content ------------------------------------------------------------------
    def path(self, uid: int) -> Path:
        """The current file of a message (follows renames by other sessions and tools)."""
        info = self.get(uid)
        candidate = self.path_dir / info.filename
        if os.path.exists(candidate):
            return candidate
        row = self._index.row(uid)
        if row is None or not os.path.exists(self.path_dir / row[2]):
            self._index.sync(force=True)
            row = self._index.row(uid)
        if row is None:
            raise MessageGone(f"message UID {uid} in {self.name} has been expunged")
        return self.path_dir / row[2]

    def read(self, uid: int) -> bytes:
        """The whole message with CRLF line ends (files written with LF are converted).

        Conversion only ever adds bytes (a bare CR or LF becomes CRLF), so a file whose
        length already equals the indexed RFC822.SIZE is CRLF throughout and is returned as
        read, without a conversion pass (every file mailyard writes; Dovecot's LF files are
        longer once converted and take the slow path).
        """
        info = self.get(uid)
        try:  # the usual case: the indexed name is current (no stat before the open)
            data = read_file(self._sdir + info.filename, info.size)
        except FileNotFoundError:
            for _attempt in range(3):
                try:
                    data = read_file(str(self.path(uid)), info.size)
                    break
                except FileNotFoundError:
                    continue  # renamed between path() and open(): look it up again
            else:
                raise MessageGone(f"message UID {uid} in {self.name} could not be read")
        if len(data) == info.size:
            return data
        return to_crlf(data)

    # -- flags -----------------------------------------------------------------------------------
    def store_flags(self, uids: Iterable[int], flags: Iterable[str], mode: str = "add",
                    unchanged_since: int | None = None) -> dict[int, frozenset]:
        """Add, remove or replace flags (system flags and keywords mixed, IMAP spelling).

        Returns {uid: all flags now} for every UID that exists and passed the
        `unchanged_since` test (CONDSTORE, RFC 7162 §3.1.3); UIDs left out failed it or are
        gone. Messages whose flags really changed get a new modseq.
        """
        if mode not in ("add", "remove", "replace"):
            raise ValueError(f"mode must be add, remove or replace, not {mode!r}")
        sys_flags, keywords = split_flags(flags)

        def compute(old_flags: frozenset, old_keywords: frozenset):
            if mode == "add":
                return old_flags | sys_flags, old_keywords | keywords
            if mode == "remove":
                return old_flags - sys_flags, old_keywords - keywords
            return sys_flags, keywords

        changed = self._index.set_flags(list(uids), compute, unchanged_since)
        result = {}
        for uid, (new_flags, new_keywords) in changed.items():
            row = self._index.row(uid)
            if row is not None and uid in self._messages:
                self._messages[uid] = MessageInfo.from_row(row)
            result[uid] = new_flags | new_keywords
        return result

    def keywords(self) -> set[str]:
        """Every keyword defined or used in this folder (for FLAGS / PERMANENTFLAGS)."""
        return self._index.all_keywords()

    # -- expunge, append, copy, move ------------------------------------------------------------------
    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove messages: the given UIDs, or (None) every message of this session's
        snapshot that is flagged \\Deleted now (whoever set the flag).

        Returns the UIDs removed, ascending; they leave this session's snapshot at once and
        are not reported by the next refresh. Does not refresh the snapshot otherwise.
        """
        if uids is None:
            uids = self._index.uids_with_flag("\\Deleted") & self._messages.keys()
        done = self._index.expunge(sorted(set(uids)))
        for uid, _size in done:
            if self._messages.pop(uid, None) is not None:
                self._order = None
        if done:
            self.store._quota_add(-sum(size for _, size in done), -len(done))
        return [uid for uid, _ in done]

    def append(self, message: bytes, flags: Iterable[str] = (), internal_date=None) -> int:
        """Add a message to this folder (IMAP APPEND); returns its UID."""
        return self.store.deliver(message, self.name, flags=flags, internal_date=internal_date,
                                  create=False)

    def copy(self, uids: Iterable[int], dest_folder_name: str) -> dict[int, int]:
        """Copy messages (flags, keywords, internal date, cache) into another folder.

        Returns {source uid: destination uid}; UIDs that are gone are left out. Files are
        hard-linked where the filesystem allows. Raises FolderNotFound for a missing target.
        """
        dest = self.store.open(dest_folder_name)
        mapping: dict[int, int] = {}
        for uid in sorted(set(uids)):
            try:
                info = self.get(uid)
                src = self.path(uid)
            except MessageGone:
                continue
            tmp = self._link_or_copy(src, dest.path_dir)
            if tmp is None:
                continue
            new_uid = dest._index.add_file(tmp, os.stat(tmp).st_size, info.size, info.flags,
                                           info.keywords, info.internal_date,
                                           cache=dict(self._index.cache_items(uid)))
            self.store._quota_add(info.size, 1)
            mapping[uid] = new_uid
        if mapping:  # durable before COPY answers OK
            fsync_dir_shared(dest.path_dir / "cur")
            fsync_dir_shared(dest.path_dir / "new")
        return mapping

    def move(self, uids: Iterable[int], dest_folder_name: str) -> dict[int, int]:
        """Copy then expunge the originals (RFC 6851 semantics); returns {src: dest uid}."""
        mapping = self.copy(uids, dest_folder_name)
        self.expunge(list(mapping))
        return mapping

    @staticmethod
    def _link_or_copy(src: Path, dest_dir: Path) -> Path | None:
        tmp = dest_dir / "tmp" / f"copy.{os.getpid()}.{os.urandom(6).hex()}"
        try:
            os.link(src, tmp)
            return tmp
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        try:
            with open(src, "rb") as fh:
                data = fh.read()
            mtime = os.stat(src).st_mtime
        except FileNotFoundError:
            return None
        return write_tmp(dest_dir, data, mtime)

    # -- cache and notification ------------------------------------------------------------
    def cache_get(self, uid: int, key: str):
        """A value cached for a message (None if absent); values are bytes/str/int/float."""
        return self._index.cache_get(uid, key)

    def cache_get_many(self, uids: list[int], key: str) -> dict:
        """{uid: value} of one cache key for several messages (UIDs ascending), one query."""
        return self._index.cache_get_many(uids, key)

    def cache_put_uids(self, key: str, values: dict) -> None:
        """Cache one key for several messages ({uid: value}) in one transaction."""
        self._index.cache_put_uids(key, values)

    def cache_put(self, uid: int, key: str, value) -> None:
        """Cache a value for a message in the folder index (ignored if it is gone)."""
        self._index.cache_put(uid, key, value)

    def cache_put_many(self, uid: int, items: dict) -> None:
        """Cache several values for a message in one transaction."""
        self._index.cache_put_many(uid, items)

    def watch(self) -> FolderWatch:
        """A FolderWatch on this folder (see mailyard.maildir.watch); call inside the loop."""
        return FolderWatch(self.path_dir)

    def close(self) -> None:
        """Forget the snapshot (the shared index stays open for other sessions)."""
        self._messages.clear()
        self._order = None
