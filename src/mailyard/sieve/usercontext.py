"""A `SieveContext` for real deliveries: per-user memories on disk, includes from storage.

`UserSieveContext(data_dir, user_address, ...)` keeps the vacation reply memory (RFC 5230
§4.2) and the duplicate-tracking ids (RFC 7352) of one user in
`data_dir/sieve/<user>/.memory.sqlite3` (one small table, entries expire by their own
period), loads `include :personal` from the user's stored scripts and `include :global`
from the global directory, and asks the caller's `mailbox_exists` callable (the Maildir
store) for `mailboxexists`. It is cheap to build per delivery; the database is opened lazily
and only when a vacation or duplicate test needs it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Callable

from mailyard.sieve.actions import Limits, SieveContext
from mailyard.sieve.storage import include_loader, user_dir

MEMORY_FILE = ".memory.sqlite3"
_SCHEMA = ("CREATE TABLE IF NOT EXISTS memory (kind TEXT NOT NULL, key TEXT NOT NULL, "
           "stamp REAL NOT NULL, expires REAL NOT NULL, PRIMARY KEY (kind, key))")


class UserSieveContext(SieveContext):
    """The context delivery passes to `mailyard.sieve.run` for one user."""

    def __init__(self, data_dir: str | os.PathLike, user_address: str, *,
                 global_dir: str | os.PathLike | None = None,
                 mailbox_exists: Callable[[str], bool] | None = None,
                 user_addresses: tuple[str, ...] = (), limits: Limits | None = None,
                 clock: Callable[[], float] = time.time):
        super().__init__(user_addresses or (user_address,), limits=limits)
        self.data_dir = data_dir
        self.user_address = user_address
        self._loader = include_loader(data_dir, user_address, global_dir)
        self._mailbox_exists = mailbox_exists
        self._clock_fn = clock
        self._db: sqlite3.Connection | None = None

    def _clock(self) -> float:
        return self._clock_fn()

    def _memory(self) -> sqlite3.Connection:
        if self._db is None:
            directory = user_dir(self.data_dir, self.user_address)
            directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(directory / MEMORY_FILE, timeout=10,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        return self._db

    def _check_and_record(self, kind: str, key: str, seconds: int, refresh: bool) -> bool:
        """True if `key` was recorded less than `seconds` ago; records/refreshes it."""
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()
        now = self._clock()
        db = self._memory()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT stamp FROM memory WHERE kind=? AND key=?",
                             (kind, digest)).fetchone()
            seen = row is not None and now - row[0] < seconds
            if not seen or refresh:
                db.execute("INSERT OR REPLACE INTO memory VALUES (?, ?, ?, ?)",
                           (kind, digest, now, now + seconds))
            db.execute("DELETE FROM memory WHERE expires < ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return seen

    def vacation_should_reply(self, key: str, seconds: int) -> bool:
        return not self._check_and_record("vacation", key, seconds, refresh=False)

    def duplicate_seen(self, id: str, seconds: int, last: bool = False) -> bool:
        return self._check_and_record("duplicate", id, seconds, refresh=last)

    def mailbox_exists(self, name: str) -> bool:
        if self._mailbox_exists is None:
            return name.upper() == "INBOX"
        return self._mailbox_exists(name)

    def load_include(self, name: str, location: str) -> str | None:
        return self._loader(name, location)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
