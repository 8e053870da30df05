"""`MailStore`: one user's Maildir++ root — folders, delivery, subscriptions, quota usage.

Layout (Maildir++, as Courier and Dovecot write it):

    Maildir/                      INBOX (cur/ new/ tmp/)
    Maildir/.Sent/                folder "Sent"; ".Work.Projects" is folder "Work.Projects"
    Maildir/.Entw&APw-rfe/        folder "Entwürfe" (modified UTF-7 on disk)
    Maildir/subscriptions         subscribed folder names (Dovecot's v2 format)
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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailyard.maildir import index as index_mod
from mailyard.maildir.errors import FolderExists, FolderNotFound, FolderOperationError, MaildirError
from mailyard.maildir.files import (
    INFO_SEP,
    fsync_dir,
    make_maildir,
    parse_entry,
    to_crlf,
    write_tmp,
)
from mailyard.maildir.folder import Folder, split_flags
from mailyard.maildir.names import (
    DELIMITER,
    INBOX,
    dir_name,
    name_from_dir,
    normalize,
    parent_names,
)

SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}
SUBSCRIPTIONS = "subscriptions"
QUOTA_FILE = "mailyard-quota"
UIDVALIDITY_FILE = "mailyard-uidvalidity"
# Maildir++: recount when the delta file grows past this size or is older than 15 minutes.
QUOTA_RECALC_BYTES = 5120
QUOTA_RECALC_AGE = 15 * 60


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


class MailStore:
    """One user's mail: the Maildir++ tree under `root` (see the module docstring)."""

    delimiter = DELIMITER

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._ensured = False
        self._usage_cache: tuple[tuple, tuple[int, int]] | None = None

    # -- layout ------------------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the root Maildir and the special folders if they are missing."""
        if self._ensured:
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
        # Rename away first so the folder vanishes atomically, then remove at leisure.
        trash = self.root / "tmp" / f"deleted-folder.{secrets.token_hex(6)}"
        os.rename(path, trash)
        usage = self._count_dirs([trash])
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
            # Dovecot 2.x: "V\t2", a blank line, then names with TAB between levels.
            body = lines[lines.index("") + 1:] if "" in lines else lines[1:]
            raw = [line.replace("\t", DELIMITER) for line in body]
        else:
            raw = lines
        for line in raw:
            with contextlib.suppress(MaildirError):
                if line.strip():
                    names.append(normalize(line.strip()))
        return names

    def _change_subscriptions(self, add: Iterable[str] = (), remove: Iterable[str] = ()) -> None:
        lock_path = self.root / (SUBSCRIPTIONS + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            names = set(self._read_subscriptions())
            names |= set(add)
            names -= set(remove)
            text = "V\t2\n\n" + "".join(n.replace(DELIMITER, "\t") + "\n" for n in sorted(names))
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
        if not (path / "cur").is_dir():
            if not create and canonical not in SPECIAL_USE:
                raise FolderNotFound(f"folder {canonical!r} does not exist")
            self.create_folder(canonical, exist_ok=True)
        sys_flags, kws = split_flags(list(flags) + list(keywords))
        data = to_crlf(bytes(message))
        when = time.time() if internal_date is None else float(internal_date)
        tmp = write_tmp(path, data, when)
        try:
            uid = self._index(path).add_file(tmp, len(data), len(data), sys_flags, kws, when)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(path / ("cur" if (sys_flags or kws) else "new"))
        self._quota_add(len(data), 1)
        return uid

    # -- quota usage ------------------------------------------------------------------------------
    def usage(self) -> tuple[int, int]:
        """(bytes, messages) over all folders; cached, recounted Maildir++-style when stale."""
        path = self.root / QUOTA_FILE
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._usage_cache is not None and self._usage_cache[0] == stamp:
                return self._usage_cache[1]
            if st.st_size <= QUOTA_RECALC_BYTES and time.time() - st.st_mtime < QUOTA_RECALC_AGE:
                total = self._sum_quota_file(path)
                if total is not None:
                    self._usage_cache = (stamp, total)
                    return total
        return self.recount_usage()

    def recount_usage(self) -> tuple[int, int]:
        """Count every message file again and rewrite the usage file."""
        if not self.root.is_dir():
            return (0, 0)
        dirs = [self.root] + [self.root / e for e in os.listdir(self.root)
                              if name_from_dir(e) is not None]
        total = self._count_dirs(dirs)
        tmp = self.root / f"{QUOTA_FILE}.tmp.{os.getpid()}.{secrets.token_hex(3)}"
        tmp.write_text(f"{total[0]} {total[1]}\n")
        os.replace(tmp, self.root / QUOTA_FILE)
        self._usage_cache = None
        return total

    @staticmethod
    def _count_dirs(dirs: Iterable[Path]) -> tuple[int, int]:
        size = count = 0
        for folder_dir in dirs:
            for subdir in ("new", "cur"):
                try:
                    entries = os.listdir(folder_dir / subdir)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for entry in entries:
                    parsed = parse_entry(subdir, entry)
                    if parsed is None:
                        continue
                    hint = parsed.vsize_hint or parsed.size_hint
                    if hint is None:
                        try:
                            hint = os.stat(folder_dir / subdir / entry).st_size
                        except FileNotFoundError:
                            continue
                    size += hint
                    count += 1
        return size, count

    @staticmethod
    def _sum_quota_file(path: Path) -> tuple[int, int] | None:
        size = count = 0
        try:
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                size += int(parts[0])
                count += int(parts[1])
        except (OSError, ValueError):
            return None
        return max(size, 0), max(count, 0)

    def _quota_add(self, size: int, count: int) -> None:
        """Append a usage delta (O_APPEND writes of one short line are atomic)."""
        try:
            fd = os.open(self.root / QUOTA_FILE, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return  # the next usage() counts from the files
        try:
            os.write(fd, f"{size} {count}\n".encode())
        finally:
            os.close(fd)


__all__ = ["INFO_SEP", "SPECIAL_USE", "FolderInfo", "MailStore"]
