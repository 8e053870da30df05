"""Per-user Sieve memories: vacation replies sent (RFC 5230 §4.2) and duplicate ids (RFC 7352).

One small SQLite database, `data_dir/delivery/sieve-memory.sqlite3`, shared by every process;
each entry is (user, kind, key) → the time it was last recorded. Entries older than a year
are pruned now and then.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

_PRUNE_AGE = 366 * 86400


class SieveMemory:
    """Remembers what a user's scripts have already done (see the module docstring)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS memory (user TEXT NOT NULL, "
                           "kind TEXT NOT NULL, key TEXT NOT NULL, stamp REAL NOT NULL, "
                           "PRIMARY KEY (user, kind, key)) WITHOUT ROWID")
        self._writes = 0

    def seen_within(self, user: str, kind: str, key: str, seconds: float, *,
                    record: str = "if-not-seen", now: float | None = None) -> bool:
        """True if (user, kind, key) was recorded less than `seconds` ago.

        `record`: "if-not-seen" stores the time only when returning False (vacation, and
        duplicate without :last); "always" stores it every time (duplicate :last).
        """
        now = time.time() if now is None else now
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    "SELECT stamp FROM memory WHERE user = ? AND kind = ? AND key = ?",
                    (user, kind, key)).fetchone()
                seen = row is not None and now - row[0] < seconds
                if not seen or record == "always":
                    self._conn.execute("INSERT OR REPLACE INTO memory VALUES (?, ?, ?, ?)",
                                       (user, kind, key, now))
                    self._writes += 1
                    if self._writes % 1000 == 0:
                        self._conn.execute("DELETE FROM memory WHERE stamp < ?",
                                           (now - _PRUNE_AGE,))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return seen

    def close(self) -> None:
        with self._lock:
            self._conn.close()
