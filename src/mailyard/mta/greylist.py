"""Greylisting (the Harris triplet scheme), state in SQLite under data_dir.

Theory of operation: a triplet is (client network, envelope sender, recipient), where the
client network is the /24 (IPv4) or /64 (IPv6) around the client address, so a sender's
pool of outbound hosts counts as one client. The first attempt of an unknown triplet is
deferred; a retry after `min_delay` and within `retry_window` passes and marks the triplet
passed, so later messages go through at once (until `max_age` without traffic). A client
network that has passed `auto_allowlist` times is not greylisted any more. Every decision
takes `now` explicitly, so tests need no sleeping.

The store is small and local; `Greylist.check` is synchronous (one short SQLite
transaction) and thread-safe, so the MTA calls it through `asyncio.to_thread`.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path


def client_network(ip: str) -> str:
    """The /24 or /64 an address belongs to, as text."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


@dataclass(frozen=True)
class GreylistDecision:
    """`passed`, and when not, `retry_after` seconds; `reason` for the log."""

    passed: bool
    retry_after: float = 0.0
    reason: str = ""


class Greylist:
    """Triplet store and decision (see the module docstring)."""

    def __init__(self, path: Path, *, min_delay: float, retry_window: float,
                 auto_allowlist: int = 5, max_age: float = 35 * 86400):
        self.path = Path(path)
        self.min_delay = min_delay
        self.retry_window = retry_window
        self.auto_allowlist = auto_allowlist
        self.max_age = max_age
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS triplets (
                network TEXT NOT NULL, sender TEXT NOT NULL, recipient TEXT NOT NULL,
                first_seen REAL NOT NULL, last_seen REAL NOT NULL,
                passed INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (network, sender, recipient));
            CREATE TABLE IF NOT EXISTS clients (
                network TEXT PRIMARY KEY, passes INTEGER NOT NULL, last_seen REAL NOT NULL);
        """)
        self._checks = 0

    @classmethod
    def from_settings(cls, settings) -> Greylist:
        g = settings.greylist
        return cls(settings.data_path / "greylist.sqlite3", min_delay=g.min_delay,
                   retry_window=g.retry_window, auto_allowlist=g.auto_allowlist,
                   max_age=g.max_age)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check(self, ip: str, sender: str, recipient: str,
              now: float | None = None) -> GreylistDecision:
        now = time.time() if now is None else now
        network = client_network(ip)
        sender, recipient = sender.lower(), recipient.lower()
        with self._lock:
            db = self._db
            self._checks += 1
            if self._checks % 1000 == 0:
                self._prune(now)
            db.execute("BEGIN IMMEDIATE")
            try:
                decision = self._decide(db, network, sender, recipient, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return decision

    def _decide(self, db, network: str, sender: str, recipient: str,
                now: float) -> GreylistDecision:
        if self.auto_allowlist:
            row = db.execute("SELECT passes FROM clients WHERE network=?",
                             (network,)).fetchone()
            if row and row[0] >= self.auto_allowlist:
                db.execute("UPDATE clients SET last_seen=? WHERE network=?", (now, network))
                return GreylistDecision(True, reason=f"client {network} auto-allowlisted")
        row = db.execute("SELECT first_seen, passed FROM triplets WHERE network=? AND "
                         "sender=? AND recipient=?", (network, sender, recipient)).fetchone()
        if row is None:
            db.execute("INSERT INTO triplets VALUES (?,?,?,?,?,0)",
                       (network, sender, recipient, now, now))
            return GreylistDecision(False, self.min_delay, "new triplet")
        first_seen, passed = row
        if passed:
            db.execute("UPDATE triplets SET last_seen=? WHERE network=? AND sender=? AND "
                       "recipient=?", (now, network, sender, recipient))
            return GreylistDecision(True, reason="known triplet")
        age = now - first_seen
        if age < self.min_delay:
            return GreylistDecision(False, self.min_delay - age, "retried too early")
        if age > self.retry_window:
            db.execute("UPDATE triplets SET first_seen=?, last_seen=? WHERE network=? AND "
                       "sender=? AND recipient=?", (now, now, network, sender, recipient))
            return GreylistDecision(False, self.min_delay, "retry window expired")
        db.execute("UPDATE triplets SET passed=1, last_seen=? WHERE network=? AND sender=? "
                   "AND recipient=?", (now, network, sender, recipient))
        db.execute("INSERT INTO clients VALUES (?,1,?) ON CONFLICT(network) DO UPDATE SET "
                   "passes=passes+1, last_seen=excluded.last_seen", (network, now))
        return GreylistDecision(True, reason=f"retried after {age:.0f}s")

    def _prune(self, now: float) -> None:
        self._db.execute("DELETE FROM triplets WHERE (passed=1 AND last_seen<?) OR "
                         "(passed=0 AND first_seen<?)",
                         (now - self.max_age, now - self.retry_window))
        self._db.execute("DELETE FROM clients WHERE last_seen<?", (now - self.max_age,))
