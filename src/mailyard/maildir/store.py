"""`MailStore`: one user's Maildir++ root — folders, delivery, subscriptions, quota usage.

Layout (Maildir++, as Courier and Dovecot write it):

    Maildir/                      INBOX (cur/ new/ tmp/)
    Maildir/.Sent/                folder "Sent"; ".Work.Projects" is folder "Work.Projects"
    Maildir/.Entw&APw-rfe/        folder "Entwürfe" (modified UTF-7 on disk)
    Maildir/subscriptions         subscribed folder names (Dovecot's v2 format, mUTF-7)
    Maildir/mailyard-quota        usage: "bytes count" lines, summed (Maildir++ maildirsize)
    Maildir/mailyard-uidvalidity  last UIDVALIDITY handed out (strictly increasing)
    Maildir/<folder>/mailyard-index.sqlite3, dovecot-keywords, maildirfolder

The special folders Drafts, Sent, Junk, Trash and Archive are created (and subscribed) the
first time a store is used, and again if missing; their SPECIAL-USE role (RFC 6154) follows
the name. All methods block on file I/O: call them from `asyncio.to_thread` in async code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from mailyard.log import get_logger
from mailyard.maildir import index as index_mod
from mailyard.maildir.errors import FolderExists, FolderNotFound, FolderOperationError, MaildirError
from mailyard.maildir.files import (
    CACHE_DOT_LINES,
    INFO_SEP,
    dot_lines,
    fsync_dir_shared,
    make_maildir,
    parse_entry,
    to_crlf,
    write_tmp,
)
from mailyard.maildir.folder import Folder, split_flags
from mailyard.maildir.names import (
    DELIMITER,
    INBOX,
    decode_mutf7,
    dir_name,
    encode_mutf7,
    name_from_dir,
    normalize,
    parent_names,
)
from mailyard.maildir.quota import QuotaUsage, count_messages

log = get_logger("maildir")

SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}
SUBSCRIPTIONS = "subscriptions"
UIDVALIDITY_FILE = "mailyard-uidvalidity"


# Functions `message bytes (CRLF) -> {cache key: value}` run at delivery (see
# register_cache_builder); IMAP registers its ENVELOPE/BODYSTRUCTURE builder here.
_CACHE_BUILDERS: list[Callable[[bytes], dict]] = []


def register_cache_builder(builder: Callable[[bytes], dict]) -> None:
    """Have every delivery and APPEND precompute per-message cache entries.

    `builder(message) -> {key: bytes | str | int | float}` runs once per stored message
    (off the event loop, in the storing thread) and its entries are written in the same
    transaction as the message's UID, so `folder.cache_get` finds them from the first FETCH.
    A builder that raises is logged and skipped: caching never fails a delivery.
    """
    if builder not in _CACHE_BUILDERS:
        _CACHE_BUILDERS.append(builder)


def _build_cache(data: bytes) -> dict:
    entries: dict = {}
    for builder in _CACHE_BUILDERS:
        try:
            entries.update(builder(data))
        except Exception:  # a parser bug must not lose mail
            log.exception("cache builder %r failed; message stored without it", builder)
    return entries


# Roots and folder directories this process has seen exist (saves stats on every
# delivery); dropped on DELETE/RENAME, and re-checked when a write finds one gone.
_ENSURED: set[str] = set()
_EXISTING: set[str] = set()


def _forget_known() -> None:
    _ENSURED.clear()
    _EXISTING.clear()


@dataclass(frozen=True)
class FolderInfo:
    """One entry of `list_folders()`.

    `name` uses "." as the hierarchy delimiter (as IMAP LIST shows it, before modified-UTF-7
    encoding); `special_use` is "\\Sent" etc. or None; `selectable` is False for a parent
    that exists only because it has children (IMAP \\NonExistent / \\Noselect).
    """

    name: str
    special_use: str | None
    subscribed: bool
    has_children: bool
    selectable: bool = True


@dataclass(frozen=True)
class FolderStatus:
    """IMAP STATUS figures of a folder without selecting it (RFC 3501 §6.3.10, RFC 7162,
    RFC 8438 SIZE)."""

    messages: int
    unseen: int
    deleted: int
    size: int
    uid_next: int
    uid_validity: int
    highest_modseq: int


class MailStore:
    """One user's mail: the Maildir++ tree under `root` (see the module docstring)."""

    delimiter = DELIMITER

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._ensured = False
        self._quota = QuotaUsage(self.root)

    # -- layout ------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the root Maildir and the special folders if they are missing."""
        if self._ensured or str(self.root) in _ENSURED:
            return
        fresh = not (self.root / "cur").is_dir()
        make_maildir(self.root)
        created = [INBOX] if fresh else []
        for name in SPECIAL_USE:
            path = self.root / dir_name(name)
            if not (path / "cur").is_dir():
                self._make_folder_dir(path)
                created.append(name)
        if created:
            self._change_subscriptions(add=created)
        self._ensured = True
        _ENSURED.add(str(self.root))

    @staticmethod
    def _make_folder_dir(path: Path) -> None:
        make_maildir(path)
        (path / "maildirfolder").touch()

    def folder_path(self, name: str) -> Path:
        """The directory of a folder (validates the name; does not check existence)."""
        canonical = normalize(name)
        return self.root if canonical == INBOX else self.root / dir_name(canonical)

    def exists(self, name: str) -> bool:
        return (self.folder_path(name) / "cur").is_dir()

    def _new_uid_validity(self) -> int:
        """A UIDVALIDITY never handed out before in this store (RFC 3501 §2.3.1.1)."""
        path = self.root / UIDVALIDITY_FILE
        with open(path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            text = fh.read().strip()
            last = int(text) if text.isdigit() else 0
            value = max(int(time.time()), last + 1)
            fh.seek(0)
            fh.truncate()
            fh.write(f"{value}\n")
            fh.flush()
        return value

    def _index(self, path: Path) -> index_mod.FolderIndex:
        return index_mod.index_for(path, self._new_uid_validity)

    # -- folders ------------------------------------------------------------------------------
    def list_folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first then by name, with nonexistent parents of children."""
        self.ensure()
        subscribed = set(self._read_subscriptions())
        real: set[str] = set()
        for entry in os.listdir(self.root):
            name = name_from_dir(entry)
            if name is not None and (self.root / entry / "cur").is_dir():
                real.add(name)
        names = set(real)
        for name in real:
            names.update(parent_names(name))
        result = [FolderInfo(INBOX, None, INBOX in subscribed,
                             any(n.startswith(INBOX + DELIMITER) for n in names))]
        for name in sorted(names):
            prefix = name + DELIMITER
            result.append(FolderInfo(
                name=name, special_use=SPECIAL_USE.get(name), subscribed=name in subscribed,
                has_children=any(n.startswith(prefix) for n in names),
                selectable=name in real))
        return result

    def create_folder(self, name: str, exist_ok: bool = False) -> str:
        """Create a folder; returns its canonical name. FolderExists if it is already there."""
        self.ensure()
        canonical = normalize(name)
        path = self.folder_path(canonical)
        if (path / "cur").is_dir():
            if exist_ok:
                return canonical
            raise FolderExists(f"folder {canonical!r} already exists")
        self._make_folder_dir(path)
        return canonical

    def delete_folder(self, name: str) -> None:
        """Delete a folder and its messages (children stay). INBOX cannot be deleted."""
        canonical = normalize(name)
        if canonical == INBOX:
            raise FolderOperationError("INBOX cannot be deleted")
        path = self.folder_path(canonical)
        if not (path / "cur").is_dir():
            raise FolderNotFound(f"folder {canonical!r} does not exist")
        index_mod.forget_index(path)
        _forget_known()
        # Rename away first so the folder vanishes atomically, then remove at leisure.
        trash = self.root / "tmp" / f"deleted-folder.{secrets.token_hex(6)}"
        os.rename(path, trash)
        usage = count_messages([trash])
        shutil.rmtree(trash, ignore_errors=True)
        self._quota_add(-usage[0], -usage[1])
        self._change_subscriptions(remove=[canonical])

    def rename_folder(self, old: str, new: str) -> None:
        """Rename a folder and its children (RFC 3501 §6.3.5).

        Renaming INBOX moves all its messages into a new folder `new` and leaves INBOX empty
        (its children stay). A special folder renamed away loses its role.
        """
        self.ensure()
        old_c, new_c = normalize(old), normalize(new)
        if new_c == INBOX:
            raise FolderExists("INBOX already exists")
        if self.exists(new_c):
            raise FolderExists(f"folder {new_c!r} already exists")
        if new_c.startswith(old_c + DELIMITER):
            raise FolderOperationError(f"cannot rename {old_c!r} into its own child")
        if old_c == INBOX:
            self._rename_inbox(new_c)
            return
        moves = [(old_c, new_c)] if self.exists(old_c) else []
        for entry in os.listdir(self.root):
            child = name_from_dir(entry)
            if child and child.startswith(old_c + DELIMITER):
                moves.append((child, new_c + child[len(old_c):]))
        if not moves:
            raise FolderNotFound(f"folder {old_c!r} does not exist")
        for _src, dst in moves:
            normalize(dst)  # the longer names must still be valid
            if self.folder_path(dst).exists():
                raise FolderExists(f"folder {dst!r} already exists")
        _forget_known()
        for src, dst in moves:
            index_mod.forget_index(self.folder_path(src))
            os.rename(self.folder_path(src), self.folder_path(dst))
        subscribed = set(self._read_subscriptions())
        renamed = [(s, d) for s, d in moves if s in subscribed]
        self._change_subscriptions(add=[d for _, d in renamed], remove=[s for s, _ in renamed])

    def _rename_inbox(self, new_c: str) -> None:
        self.create_folder(new_c)
        dest = self.folder_path(new_c)
        inbox = self._index(self.root)
        with inbox.transaction():
            keywords = self.root / "dovecot-keywords"
            if keywords.exists():
                shutil.copy2(keywords, dest / "dovecot-keywords")
            for subdir in ("new", "cur"):
                for entry in os.listdir(self.root / subdir):
                    if parse_entry(subdir, entry) is not None:
                        os.rename(self.root / subdir / entry, dest / subdir / entry)
            inbox.scan_locked()

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, name: str) -> None:
        """Add a folder to the subscriptions (RFC 3501 allows nonexistent names)."""
        self.ensure()
        self._change_subscriptions(add=[normalize(name)])

    def unsubscribe(self, name: str) -> None:
        self.ensure()
        self._change_subscriptions(remove=[normalize(name)])

    def subscriptions(self) -> list[str]:
        return sorted(set(self._read_subscriptions()))

    def _read_subscriptions(self) -> list[str]:
        try:
            lines = (self.root / SUBSCRIPTIONS).read_text("utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        names: list[str] = []
        if lines and lines[0].startswith("V\t"):
            # Dovecot 2.x: "V\t2", a blank line, then names with TAB between levels, each
            # level in modified UTF-7.
            body = lines[lines.index("") + 1:] if "" in lines else lines[1:]
            raw = [line.split("\t") for line in body]
        else:
            # Dovecot 1.x / Courier: one name per line (modified UTF-7, "." between levels).
            raw = [line.strip().split(DELIMITER) for line in lines]
        for levels in raw:
            with contextlib.suppress(MaildirError):
                if any(levels):
                    names.append(normalize(DELIMITER.join(decode_mutf7(p) for p in levels)))
        return names

    def _change_subscriptions(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        lock_path = self.root / (SUBSCRIPTIONS + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = set(self._read_subscriptions())
            names |= set(add)
            names -= set(remove)
            text = "V\t2\n\n" + "".join(
                "\t".join(encode_mutf7(p) for p in n.split(DELIMITER)) + "\n"
                for n in sorted(names))
            tmp = self.root / f"{SUBSCRIPTIONS}.tmp.{os.getpid()}"
            tmp.write_text(text, "utf-8")
            os.replace(tmp, self.root / SUBSCRIPTIONS)

    # -- messages ------------------------------------------------------------------------------
    def open(self, name: str) -> Folder:
        """Select a folder; raises FolderNotFound (special folders are created on demand)."""
        self.ensure()
        canonical = normalize(name)
        path = self.folder_path(canonical)
        if not (path / "cur").is_dir():
            if canonical in SPECIAL_USE:
                self.create_folder(canonical, exist_ok=True)
            else:
                raise FolderNotFound(f"folder {canonical!r} does not exist")
        return Folder(self, canonical, path, self._index(path))

    def status(self, name: str) -> FolderStatus:
        """STATUS figures, read from the folder index after picking up file changes."""
        self.ensure()
        canonical = normalize(name)
        path = self.folder_path(canonical)
        if not (path / "cur").is_dir():
            raise FolderNotFound(f"folder {canonical!r} does not exist")
        index = self._index(path)
        index.sync()
        with index.lock:
            messages, unseen, deleted, size = index.counts()
            return FolderStatus(messages=messages, unseen=unseen, deleted=deleted, size=size,
                                uid_next=index.meta("uid_next"),
                                uid_validity=index.meta("uid_validity"),
                                highest_modseq=index.meta("highest_modseq"))

    def deliver(self, message: bytes, folder: str = INBOX, flags: Iterable[str] = (),
                keywords: Iterable[str] = (), internal_date: float | None = None,
                create: bool = True) -> int:
        """Store a message durably and return its UID.

        The message is stored with CRLF line ends. It is written to tmp/ and fsynced, renamed
        into new/ (cur/ when it has flags or keywords) under the folder lock, and the directory
        is fsynced before the UID is returned. `create=False` raises FolderNotFound for a
        missing folder instead of creating it. `internal_date` is seconds since the epoch.
        """
        self.ensure()
        canonical = normalize(folder)
        path = self.folder_path(canonical)
        sys_flags, kws = split_flags(list(flags) + list(keywords))
        data = to_crlf(bytes(message))
        when = time.time() if internal_date is None else float(internal_date)
        for attempt in range(2):
            if str(path) not in _EXISTING:
                if not (path / "cur").is_dir():
                    if not create and canonical not in SPECIAL_USE:
                        raise FolderNotFound(f"folder {canonical!r} does not exist")
                    self.ensure()
                    self.create_folder(canonical, exist_ok=True)
                _EXISTING.add(str(path))
            try:
                tmp = write_tmp(path, data, when)
                break
            except FileNotFoundError:
                # The folder (or the whole Maildir) was removed since we last looked.
                _forget_known()
                self._ensured = False
                if attempt:
                    raise
        cache = _build_cache(data) if _CACHE_BUILDERS else {}
        # A fact of the store's own: readers that send messages dot-terminated (POP3) send
        # the file in pieces instead of scanning it (files.dot_lines).
        lines = dot_lines(data)
        if lines is not None:
            cache[CACHE_DOT_LINES] = lines
        try:
            uid = self._index(path).add_file(tmp, len(data), len(data), sys_flags, kws, when,
                                             cache=cache)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir_shared(f"{path}/{'cur' if (sys_flags or kws) else 'new'}")
        self._quota_add(len(data), 1)
        return uid

    # -- quota usage (see mailyard.maildir.quota) ---------------------------------------------
    def usage(self) -> tuple[int, int]:
        """(bytes, messages) over all folders; cached, recounted Maildir++-style when stale."""
        return self._quota.usage()

    def recount_usage(self) -> tuple[int, int]:
        """Count every message file again and rewrite the usage file."""
        return self._quota.recount()

    def _quota_add(self, size: int, count: int) -> None:
        self._quota.add(size, count)


__all__ = ["INFO_SEP", "SPECIAL_USE", "FolderInfo", "FolderStatus", "MailStore",
           "register_cache_builder"]
