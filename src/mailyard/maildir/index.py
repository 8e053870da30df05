"""The per-folder index: UIDs, flags, modification sequences and the message cache.

Theory of operation: the Maildir files are the truth; the index (`mailyard-index.sqlite3` in
the folder directory) remembers what the files cannot say: the UID of each file BASE, the
folder's UIDVALIDITY and UIDNEXT, the CONDSTORE modification sequence of every message, the
expunge log (uid, modseq) sessions use to learn what vanished, and a cache of per-message
data computed once (IMAP's ENVELOPE and BODYSTRUCTURE).

Every change happens inside one SQLite write transaction (`BEGIN IMMEDIATE`). SQLite takes
fcntl locks on the database file, so that transaction is the folder's lock across processes
too; inside a process a re-entrant thread lock serialises the shared connection. Deliveries
rename their file into `new/` *inside* the transaction, and a rescan lists `new/` then `cur/`
*inside* the transaction, so a scan never sees a half-done delivery of ours.

A rescan ("sync") reconciles the directory listing with the rows: unknown BASEs get the next
UIDs (in name order, which is delivery-time order), renamed files update their flags from the
info letters (another tool set flags), rows whose file is gone are expunged. It is skipped
only when the mtimes of `new/` and `cur/` equal those recorded at the last scan *and* that
scan started at least 1.5 s after them: directory mtimes come from a coarse clock, so a
change in the same tick as a listing would otherwise hide. Our own writes change the mtimes
too, so a busy folder is rescanned on refresh until it has been quiet for 1.5 s; such a
rescan first compares the listed file names with the index and stops there when they match
(our own changes update the index as they happen), so it costs a listing, not a parse.

Each transaction that changes something takes one new modseq (messages changed together share
it, as RFC 7162 §3.1 allows) and signals in-process watchers after commit.
A missing or corrupt index is rebuilt from the files; on first creation a `dovecot-uidlist`
is imported so a mailbox copied from Dovecot keeps its UIDVALIDITY and UIDs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from mailyard.log import event, get_logger
from mailyard.maildir import dovecot, watch
from mailyard.maildir.files import (
    FLAG_LETTERS,
    ParsedName,
    crlf_size,
    entry_for,
    flags_to_letters,
    letters_to_flags,
    new_base,
    parse_entry,
)

INDEX_FILE = "mailyard-index.sqlite3"
_RECENT_NS = 1_500_000_000
log = get_logger("maildir")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS msgs (
    uid INTEGER PRIMARY KEY,
    base TEXT NOT NULL UNIQUE,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    internal_date REAL NOT NULL,
    flags TEXT NOT NULL,
    keywords TEXT NOT NULL,
    modseq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS msgs_modseq ON msgs (modseq);
CREATE TABLE IF NOT EXISTS expunged (uid INTEGER PRIMARY KEY, modseq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (modseq);
CREATE TABLE IF NOT EXISTS cache (
    uid INTEGER NOT NULL, key TEXT NOT NULL, value BLOB,
    PRIMARY KEY (uid, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS preassigned (base TEXT PRIMARY KEY, uid INTEGER NOT NULL);
"""

Row = tuple  # (uid, base, filename, size, internal_date, flags, keywords, modseq)
COLUMNS = "uid, base, filename, size, internal_date, flags, keywords, modseq"


def _split(text: str) -> frozenset:
    return frozenset(text.split()) if text else frozenset()


def _join(items: Iterable[str]) -> str:
    return " ".join(sorted(items))


class FolderIndex:
    """The index of one folder directory, shared by every session of this process."""

    def __init__(self, folder_dir: Path, new_uid_validity: Callable[[], int]):
        self.dir = Path(folder_dir)
        self.sdir = str(self.dir) + os.sep  # string prefix: pathlib is slow on hot paths
        self.key = watch.folder_key(self.dir)
        self.lock = threading.RLock()
        self._new_uid_validity = new_uid_validity
        self.closed = False
        self._depth = 0
        self._tx_modseq: int | None = None
        self._changed = False
        self._kw_stamp = object()
        self.keyword_names: dict[str, str] = {}  # letter -> keyword
        self.keyword_letters: dict[str, str] = {}  # keyword -> letter
        self.conn = self._connect()
        clean_tmp(self.dir)

    # -- opening --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        path = self.dir / INDEX_FILE
        try:
            return self._open_db(path)
        except sqlite3.DatabaseError as exc:
            # A corrupt index is only a cache of the files: set it aside and rebuild.
            aside = path.with_name(f"{INDEX_FILE}.corrupt.{int(time.time())}")
            event(log, "index corrupt; rebuilding from files", folder=str(self.dir),
                  error=str(exc), level=30)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{path}{suffix}", f"{aside}{suffix}")
            return self._open_db(path)

    def _open_db(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=60.0, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a process crash loses nothing; the message files are fsynced.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._meta_get(conn, "uid_validity") is None:
                    self._initialise(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            conn.close()
            raise
        return conn

    def _initialise(self, conn: sqlite3.Connection) -> None:
        imported = dovecot.read_uidlist(self.dir)
        if imported is not None:
            uid_validity, uid_next = imported.uid_validity, imported.next_uid
            conn.executemany("INSERT OR REPLACE INTO preassigned (base, uid) VALUES (?, ?)",
                             imported.uids.items())
            event(log, "imported dovecot-uidlist", folder=str(self.dir),
                  uid_validity=uid_validity, messages=len(imported.uids))
        else:
            uid_validity, uid_next = self._new_uid_validity(), 1
        for key, value in (("uid_validity", uid_validity), ("uid_next", uid_next),
                           ("highest_modseq", 1), ("scan_new", 0), ("scan_cur", 0),
                           ("scan_time", 0)):
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self.lock, contextlib.suppress(sqlite3.Error):
            self.closed = True
            self.conn.close()

    # -- meta and transactions ---------------------------------------------------------------
    @staticmethod
    def _meta_get(conn: sqlite3.Connection, key: str) -> int | None:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])

    def meta(self, key: str) -> int:
        with self.lock:
            return self._meta_get(self.conn, key) or 0

    def _meta_set(self, key: str, value: int) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The folder's write lock (thread + process); nested use joins the outer one."""
        with self.lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            self._tx_modseq = None
            self._changed = False
            try:
                yield self.conn
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise
            changed, self._changed = self._changed, False
        if changed:
            watch.notify(self.key)

    def next_modseq(self) -> int:
        """The modseq of the current transaction (allocated on first use)."""
        if self._tx_modseq is None:
            self._tx_modseq = (self._meta_get(self.conn, "highest_modseq") or 0) + 1
            self._meta_set("highest_modseq", self._tx_modseq)
        self._changed = True
        return self._tx_modseq

    # -- keywords -----------------------------------------------------------------------------
    def load_keywords(self) -> None:
        stamp = dovecot.keywords_stamp(self.dir)
        if stamp != self._kw_stamp:
            self.keyword_names = dovecot.read_keywords(self.dir)
            self.keyword_letters = {v: k for k, v in self.keyword_names.items()}
            self._kw_stamp = stamp

    def letters_for(self, flags, keywords) -> str:
        """Info letters, giving new keywords a letter while any of the 26 is free."""
        self.load_keywords()
        missing = [k for k in sorted(keywords)
                   if k not in self.keyword_letters and k not in FLAG_LETTERS]
        if missing:
            free = [chr(c) for c in range(ord("a"), ord("z") + 1)
                    if chr(c) not in self.keyword_names]
            added = False
            for kw, letter in zip(missing, free):
                self.keyword_names[letter] = kw
                self.keyword_letters[kw] = letter
                added = True
            if added:
                dovecot.write_keywords(self.dir, self.keyword_names)
                self._kw_stamp = dovecot.keywords_stamp(self.dir)
        return flags_to_letters(flags, keywords, self.keyword_letters)

    def _flags_from_letters(self, letters: str, old_keywords=frozenset()):
        flags, keywords = letters_to_flags(letters, self.keyword_names)
        # Keywords beyond the 26 letters live only in the index: keep them.
        kept = {k for k in old_keywords
                if k not in self.keyword_letters and k not in FLAG_LETTERS}
        return flags, keywords | kept

    # -- scanning -------------------------------------------------------------------------------
    def _dir_stamps(self) -> tuple[int, int]:
        return (os.stat(self.sdir + "new").st_mtime_ns, os.stat(self.sdir + "cur").st_mtime_ns)

    def needs_scan(self) -> bool:
        stamps = self._dir_stamps()
        with self.lock:
            recorded = (self.meta("scan_new"), self.meta("scan_cur"))
        if stamps != recorded:
            return True
        # Trust the recorded listing only if it was taken well after the last change.
        return self.meta("scan_time") - max(stamps) < _RECENT_NS

    def sync(self, force: bool = False) -> bool:
        """Reconcile the index with the files if they may have changed; True if scanned."""
        if not force and not self.needs_scan():
            return False
        with self.transaction():
            self.scan_locked()
        return True

    def _listing(self) -> dict[str, ParsedName]:
        found: dict[str, ParsedName] = {}
        # new/ before cur/: a file moved new -> cur meanwhile is then seen at least once.
        for subdir in ("new", "cur"):
            try:
                entries = os.listdir(self.dir / subdir)
            except FileNotFoundError:
                continue
            for entry in entries:
                if not entry.isascii() and not _is_utf8(entry):
                    continue  # a name that is not UTF-8 is no Maildir message of anyone's
                parsed = parse_entry(subdir, entry)
                if parsed is not None:
                    found[parsed.base] = parsed
        return found

    def _names(self) -> set[str]:
        """Relative file names of the messages in new/ and cur/, without parsing them (the
        same entries `_listing` keeps)."""
        names: set[str] = set()
        for subdir in ("new", "cur"):
            try:
                entries = os.listdir(self.sdir + subdir)
            except FileNotFoundError:
                continue
            prefix = subdir + "/"
            for entry in entries:
                if entry[:1] == "." or entry[:3] in (":2,", ";2,", "!2,"):
                    continue
                if not entry.isascii() and not _is_utf8(entry):
                    continue
                names.add(prefix + entry)
        return names

    def scan_locked(self) -> None:
        """Reconcile rows with a fresh listing; caller holds the transaction."""
        self.load_keywords()
        scan_time = time.time_ns()
        stamps = self._dir_stamps()
        # Fast path: the files are exactly the ones the index knows (the usual case when
        # only mailyard changed the folder, whose changes update the index as they happen).
        known = {fn for (fn,) in self.conn.execute("SELECT filename FROM msgs")}
        if self._names() == known and not self.conn.execute(
                "SELECT 1 FROM preassigned LIMIT 1").fetchone():
            self._record_scan(stamps, scan_time)
            return
        found = self._listing()
        rows = {r[1]: r for r in self.conn.execute(f"SELECT {COLUMNS} FROM msgs")}
        missing = rows.keys() - found.keys()
        if missing:
            # A concurrent rename by another tool can hide a file from one listing: look again.
            again = self._listing()
            for base in missing & again.keys():
                found[base] = again[base]
            missing = rows.keys() - found.keys()
        fresh: list[ParsedName] = []
        for base, parsed in found.items():
            row = rows.get(base)
            if row is None:
                fresh.append(parsed)
            elif parsed.filename != row[2]:
                self._adopt_rename(row, parsed)
        for base in missing:
            self._forget(rows[base][0])
        preassigned = dict(self.conn.execute("SELECT base, uid FROM preassigned"))
        fresh.sort(key=lambda p: (preassigned.get(p.base, 1 << 62), _name_order(p.base)))
        for parsed in fresh:
            flags, keywords = self._flags_from_letters(parsed.letters)
            self.insert_locked(parsed, flags, keywords, uid=preassigned.get(parsed.base))
        if preassigned:
            self.conn.execute("DELETE FROM preassigned")
        self._record_scan(stamps, scan_time)

    def _record_scan(self, stamps: tuple[int, int], scan_time: int) -> None:
        self._meta_set("scan_new", stamps[0])
        self._meta_set("scan_cur", stamps[1])
        self._meta_set("scan_time", scan_time)

    def _adopt_rename(self, row: Row, parsed: ParsedName) -> None:
        uid, _, _, _, _, flags_text, kw_text, _ = row
        old_flags, old_keywords = _split(flags_text), _split(kw_text)
        if parsed.has_info:  # Dovecot sets flags on files it leaves in new/ too
            flags, keywords = self._flags_from_letters(parsed.letters, old_keywords)
        else:
            flags, keywords = old_flags, old_keywords
        if flags != old_flags or keywords != old_keywords:
            self.conn.execute(
                "UPDATE msgs SET filename = ?, flags = ?, keywords = ?, modseq = ? WHERE uid = ?",
                (parsed.filename, _join(flags), _join(keywords), self.next_modseq(), uid))
        else:
            self.conn.execute("UPDATE msgs SET filename = ? WHERE uid = ?",
                              (parsed.filename, uid))

    def _forget(self, uid: int) -> None:
        self.conn.execute("DELETE FROM msgs WHERE uid = ?", (uid,))
        self.conn.execute("DELETE FROM cache WHERE uid = ?", (uid,))
        self.conn.execute("INSERT OR REPLACE INTO expunged (uid, modseq) VALUES (?, ?)",
                          (uid, self.next_modseq()))

    def insert_locked(self, parsed: ParsedName, flags, keywords, *, uid: int | None = None,
                      size: int | None = None, internal_date: float | None = None) -> int | None:
        """Give a file on disk its UID; None if the file vanished meanwhile."""
        path = self.sdir + parsed.filename
        try:
            if internal_date is None:
                internal_date = os.stat(path).st_mtime
            if size is None:
                size = parsed.vsize_hint
                if size is None:
                    size = crlf_size(path)
        except FileNotFoundError:
            return None
        uid_next = self._meta_get(self.conn, "uid_next") or 1
        if uid is None or self.conn.execute("SELECT 1 FROM msgs WHERE uid = ?",
                                            (uid,)).fetchone():
            uid = uid_next
        self._meta_set("uid_next", max(uid_next, uid + 1))
        self.conn.execute(
            f"INSERT INTO msgs ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (uid, parsed.base, parsed.filename, size, internal_date, _join(flags),
             _join(keywords), self.next_modseq()))
        return uid

    # -- adding a message -------------------------------------------------------------------
    def add_file(self, tmp_path: Path | str, size: int, vsize: int, flags, keywords,
                 internal_date: float, cache: dict | None = None) -> int:
        """Move a written tmp/ file into the folder and give it the next UID.

        The rename happens under the folder lock so no scan sees the file without its row.
        """
        with self.transaction():
            letters = self.letters_for(flags, keywords) if (flags or keywords) else None
            base = new_base(size, vsize)
            rel = entry_for(base, letters)
            os.rename(tmp_path, self.sdir + rel)
            if abs(os.stat(self.sdir + rel).st_mtime - internal_date) > 0.001:
                os.utime(self.sdir + rel, (internal_date, internal_date))  # INTERNALDATE
            subdir, _, entry = rel.partition("/")
            parsed = ParsedName(base=base, letters=letters or "", subdir=subdir, entry=entry,
                                has_info=letters is not None)
            uid = self.insert_locked(parsed, flags, keywords, size=vsize,
                                     internal_date=internal_date)
            if cache and uid is not None:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO cache (uid, key, value) VALUES (?, ?, ?)",
                    [(uid, key, value) for key, value in cache.items()])
        assert uid is not None
        return uid

    # -- reading ----------------------------------------------------------------------------------
    def row(self, uid: int) -> Row | None:
        with self.lock:
            return self.conn.execute(f"SELECT {COLUMNS} FROM msgs WHERE uid = ?",
                                     (uid,)).fetchone()

    def rows(self) -> list[Row]:
        with self.lock:
            return self.conn.execute(f"SELECT {COLUMNS} FROM msgs ORDER BY uid").fetchall()

    def changed_since(self, modseq: int) -> tuple[list[Row], list[int]]:
        with self.lock:
            rows = self.conn.execute(
                f"SELECT {COLUMNS} FROM msgs WHERE modseq > ? ORDER BY uid", (modseq,)).fetchall()
            gone = [u for (u,) in self.conn.execute(
                "SELECT uid FROM expunged WHERE modseq > ? ORDER BY uid", (modseq,))]
        return rows, gone

    def counts(self) -> tuple[int, int, int, int]:
        """(messages, unseen, deleted, total size) straight from the index."""
        with self.lock:
            row = self.conn.execute(
                "SELECT COUNT(*), "
                "SUM(CASE WHEN ' ' || flags || ' ' LIKE '% \\Seen %' THEN 0 ELSE 1 END), "
                "SUM(CASE WHEN ' ' || flags || ' ' LIKE '% \\Deleted %' THEN 1 ELSE 0 END), "
                "SUM(size) FROM msgs").fetchone()
        return row[0], row[1] or 0, row[2] or 0, row[3] or 0

    def uids_with_flag(self, flag: str) -> set[int]:
        with self.lock:
            return {u for (u,) in self.conn.execute(
                "SELECT uid FROM msgs WHERE ' ' || flags || ' ' LIKE ?", (f"% {flag} %",))}

    def all_keywords(self) -> set[str]:
        with self.lock:
            self.load_keywords()
            found = set(self.keyword_letters)
            for (text,) in self.conn.execute("SELECT DISTINCT keywords FROM msgs"):
                found |= _split(text)
        return found

    # -- cache -------------------------------------------------------------------------------------
    def cache_get(self, uid: int, key: str):
        with self.lock:
            row = self.conn.execute("SELECT value FROM cache WHERE uid = ? AND key = ?",
                                    (uid, key)).fetchone()
        return None if row is None else row[0]

    def cache_get_many(self, uids: list[int], key: str) -> dict:
        """{uid: value} of one cache key for several messages, in one query (absent UIDs
        are left out)."""
        if not uids:
            return {}
        with self.lock:
            if len(uids) > 1 and uids[-1] - uids[0] < 2 * len(uids):
                rows = self.conn.execute(
                    "SELECT uid, value FROM cache WHERE uid BETWEEN ? AND ? AND key = ?",
                    (uids[0], uids[-1], key)).fetchall()
            else:
                rows = []
                for start in range(0, len(uids), 500):
                    chunk = uids[start:start + 500]
                    rows += self.conn.execute(
                        f"SELECT uid, value FROM cache WHERE key = ? AND uid IN "
                        f"({','.join('?' * len(chunk))})", (key, *chunk)).fetchall()
        return dict(rows)

    def cache_put_uids(self, key: str, values: dict) -> None:
        """Cache one key for several messages ({uid: value}) in one transaction."""
        if not values:
            return
        with self.transaction():
            live = {u for (u,) in self.conn.execute(
                "SELECT uid FROM msgs WHERE uid BETWEEN ? AND ?",
                (min(values), max(values)))}
            self.conn.executemany("INSERT OR REPLACE INTO cache (uid, key, value) "
                                  "VALUES (?, ?, ?)",
                                  [(u, key, v) for u, v in values.items() if u in live])

    def cache_put(self, uid: int, key: str, value) -> None:
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM msgs WHERE uid = ?", (uid,)).fetchone():
                self.conn.execute("INSERT OR REPLACE INTO cache (uid, key, value) "
                                  "VALUES (?, ?, ?)", (uid, key, value))

    def cache_put_many(self, uid: int, items: dict) -> None:
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM msgs WHERE uid = ?", (uid,)).fetchone():
                self.conn.executemany("INSERT OR REPLACE INTO cache (uid, key, value) "
                                      "VALUES (?, ?, ?)",
                                      [(uid, k, v) for k, v in items.items()])

    def cache_items(self, uid: int) -> list[tuple[str, object]]:
        with self.lock:
            return self.conn.execute("SELECT key, value FROM cache WHERE uid = ?",
                                     (uid,)).fetchall()

    # -- changing messages ------------------------------------------------------------------------
    def set_flags(self, uids: Iterable[int], compute, unchanged_since: int | None
                  ) -> dict[int, tuple[frozenset, frozenset]]:
        """Apply `compute(flags, keywords) -> (flags, keywords)` to each UID, renaming files.

        UIDs that are gone, or whose modseq is above `unchanged_since`, are left out.
        """
        result: dict[int, tuple[frozenset, frozenset]] = {}
        with self.transaction():
            self.load_keywords()
            for uid in uids:
                row = self.conn.execute(f"SELECT {COLUMNS} FROM msgs WHERE uid = ?",
                                        (uid,)).fetchone()
                if row is None:
                    continue
                if unchanged_since is not None and row[7] > unchanged_since:
                    continue
                old = (_split(row[5]), _split(row[6]))
                new = compute(*old)
                if new == old:
                    result[uid] = old
                    continue
                filename = self._rename_for_flags(row, *new)
                if filename is None:
                    continue
                self.conn.execute(
                    "UPDATE msgs SET filename = ?, flags = ?, keywords = ?, modseq = ? "
                    "WHERE uid = ?",
                    (filename, _join(new[0]), _join(new[1]), self.next_modseq(), uid))
                result[uid] = new
        return result

    def _rename_for_flags(self, row: Row, flags, keywords) -> str | None:
        uid, base, filename = row[0], row[1], row[2]
        target = entry_for(base, self.letters_for(flags, keywords))
        if target == filename:
            return filename
        for _attempt in range(2):
            try:
                os.rename(self.dir / filename, self.dir / target)
                return target
            except FileNotFoundError:
                # Another tool renamed or removed it: rescan and retry with its new name.
                self.scan_locked()
                current = self.conn.execute("SELECT filename FROM msgs WHERE uid = ?",
                                            (uid,)).fetchone()
                if current is None:
                    return None
                filename = current[0]
        return None

    def expunge(self, uids: Iterable[int]) -> list[tuple[int, int]]:
        """Delete the files and rows of `uids`; returns [(uid, size)] actually expunged."""
        done: list[tuple[int, int]] = []
        with self.transaction():
            for uid in uids:
                row = self.conn.execute("SELECT filename, size FROM msgs WHERE uid = ?",
                                        (uid,)).fetchone()
                if row is None:
                    continue
                try:
                    os.unlink(self.dir / row[0])
                except FileNotFoundError:
                    self.scan_locked()
                    again = self.conn.execute("SELECT filename FROM msgs WHERE uid = ?",
                                              (uid,)).fetchone()
                    if again is None:
                        continue  # the rescan saw it gone and logged the expunge
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.dir / again[0])
                self._forget(uid)
                done.append((uid, row[1]))
        return done


TMP_MAX_AGE = 36 * 3600


def clean_tmp(folder_dir: Path) -> None:
    """Remove what a crash left in tmp/: files untouched for 36 hours (the Maildir rule) and
    folders whose deletion was interrupted (`deleted-folder.*`, any age)."""
    tmp = Path(folder_dir) / "tmp"
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return
    cutoff = time.time() - TMP_MAX_AGE
    for entry in entries:
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                if entry.name.startswith("deleted-folder."):
                    shutil.rmtree(entry.path, ignore_errors=True)
            elif entry.stat(follow_symlinks=False).st_ctime < cutoff:
                # ctime, not mtime: a message being written may carry an old internal date.
                os.unlink(entry.path)


def _is_utf8(entry: str) -> bool:
    try:
        entry.encode("utf-8")
    except UnicodeEncodeError:  # os.listdir's surrogate escapes for undecodable bytes
        return False
    return True


def _name_order(base: str) -> tuple[int, str]:
    """Sort key: the leading seconds of a Maildir name numerically, then the name."""
    head = base.split(".", 1)[0]
    return (int(head) if head.isdigit() else 0, base)


# -- the per-process registry -------------------------------------------------------------------
_registry_lock = threading.Lock()
_registry: dict[tuple[int, str], FolderIndex] = {}


def index_for(folder_dir: Path, new_uid_validity: Callable[[], int]) -> FolderIndex:
    """The shared FolderIndex of a folder directory in this process."""
    pid = os.getpid()
    fast = (pid, "=" + str(folder_dir))
    index = _registry.get(fast)
    if index is not None and not index.closed and os.path.exists(index.sdir + INDEX_FILE):
        return index
    key = (pid, watch.folder_key(folder_dir))
    with _registry_lock:
        index = _registry.get(key)
        if index is not None and not os.path.exists(index.sdir + INDEX_FILE):
            index.close()  # the folder was removed and maybe recreated by someone else
        if index is None or index.closed:
            index = FolderIndex(Path(folder_dir), new_uid_validity)
            _registry[key] = index
        _registry[fast] = index
        return index


def forget_index(folder_dir: Path) -> None:
    """Close and drop the index of a folder that is being deleted or renamed."""
    prefix = watch.folder_key(folder_dir)
    with _registry_lock:
        for key in [k for k in _registry if k[1] == prefix or k[1].startswith(prefix + ".")]:
            _registry.pop(key).close()
        # Path-keyed shortcuts to closed indexes are dropped too.
        for key in [k for k, v in _registry.items() if v.closed]:
            del _registry[key]
