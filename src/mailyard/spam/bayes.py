"""Bayesian classifier: SpamAssassin's tokens, Robinson's f(w), Fisher chi-square combining.

Theory of operation: `tokenize(msg)` (mailyard.spam.tokenizer) turns a ParsedMessage into the
token set SpamAssassin's Bayes plugin makes — body and Subject words with their decomposed
forms, `UD:`/`U*`/`D*` pieces of links and addresses, `H<header>:` tokens from every header
but the noisy ones, `sk:`/`u8:` for long and 8-bit words. `BayesStore` keeps per-token
spam/ham counts in SQLite, keyed by a 64-bit hash of the token. `classify` looks the tokens
up, computes Robinson's f(w) = (s·x + n·p(w)) / (s + n) for each, keeps the 150 farthest from
0.5 (ignoring those within MIN_PROB_STRENGTH of it), and combines them with Fisher's
chi-square method (H and S, I = (1 + S − H) / 2). Below `min_learned` spam or ham messages
the classifier abstains (None). Learning records a message id so learning the same message
twice changes nothing, and `forget` undoes exactly what was learned. A database records the
tokenizer version it was learned with; one learned with another version is not used for
classifying (its tokens would not match) until it is learned again.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

from mailyard.spam.message import ParsedMessage
from mailyard.spam.tokenizer import TOKENIZER_VERSION, tokenize

# Robinson's s (strength of the prior), x (the prior for unseen evidence) and the band
# around 0.5 whose tokens are ignored. Chosen by two-fold cross-validation on the training
# half of the bench corpus only (see bench/RESULTS.md); the test half never informed them.
# (SpamAssassin's own constants, s=0.030, x=0.538, 0.346, lost in the same cross-validation
# with SpamAssassin's tokens: on a few thousand learned messages they leave more ham at
# 0.2-0.6.)
S_CONSTANT = 0.1
X_CONSTANT = 0.5
MIN_PROB_STRENGTH = 0.2
MAX_TOKENS_USED = 150
DEFAULT_MAX_DB_TOKENS = 300_000

def token_id(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "big", signed=True)


def message_id(msg: ParsedMessage) -> str:
    """What identifies a message for 'already learned': Message-ID plus a body digest."""
    mid = (msg.header("Message-ID") or [""])[0]
    digest = hashlib.sha256()
    digest.update(mid.encode("utf-8", "replace"))
    digest.update(msg.subject.encode("utf-8", "replace"))
    body_at = msg.raw.find(b"\n\n")
    digest.update(msg.raw[body_at + 2: body_at + 2 + 65536] if body_at != -1 else msg.raw)
    return digest.hexdigest()[:40]


def chi2q(x2: float, v: int) -> float:
    """P(chi-square with v degrees of freedom >= x2), v even."""
    m = x2 / 2.0
    if m > 700:
        return 0.0
    total = term = math.exp(-m)
    for i in range(1, v // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (id INTEGER PRIMARY KEY, spam INTEGER NOT NULL,
                                   ham INTEGER NOT NULL, atime INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen (msgid TEXT PRIMARY KEY, verdict TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES ('spam', 0), ('ham', 0);
"""


class BayesStore:
    """Token counts and learned-message ids in one SQLite file (WAL; safe across processes)."""

    def __init__(self, path: str | Path, *, min_learned: int = 200,
                 max_tokens: int = DEFAULT_MAX_DB_TOKENS):
        self.path = Path(path)
        self.min_learned = min_learned
        self.max_tokens = max_tokens
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.RLock()
        self._in_batch = False

    # -- connection ---------------------------------------------------------------------------
    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            # a database without a version was learned by the first tokenizer if it has
            # learned anything; an empty one takes the current version
            conn.execute("INSERT OR IGNORE INTO totals SELECT 'tokenizer', CASE WHEN "
                         "sum(value) > 0 THEN 1 ELSE ? END FROM totals WHERE name IN "
                         "('spam', 'ham')", (TOKENIZER_VERSION,))
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    @contextlib.contextmanager
    def batch(self):
        """One transaction around many `learn` calls (learning thousands is then fast)."""
        with self._lock:
            if self._in_batch:
                yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_batch = True
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            else:
                self.conn.execute("COMMIT")
            finally:
                self._in_batch = False

    # -- reading ------------------------------------------------------------------------------
    def totals(self) -> tuple[int, int]:
        rows = dict(self.conn.execute("SELECT name, value FROM totals"))
        return rows.get("spam", 0), rows.get("ham", 0)

    def tokenizer_version(self) -> int:
        row = self.conn.execute("SELECT value FROM totals WHERE name = 'tokenizer'").fetchone()
        return row[0] if row else TOKENIZER_VERSION

    def stats(self) -> dict:
        nspam, nham = self.totals()
        ntokens = self.conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
        version = self.tokenizer_version()
        return {"path": str(self.path), "spam": nspam, "ham": nham, "tokens": ntokens,
                "tokenizer": version, "usable": version == TOKENIZER_VERSION}

    def counts(self, ids: list[int]) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        conn = self.conn
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for tid, s, h in conn.execute(
                    f"SELECT id, spam, ham FROM tokens WHERE id IN ({marks})", chunk):
                out[tid] = (s, h)
        return out

    def seen(self, msgid: str) -> str | None:
        row = self.conn.execute("SELECT verdict FROM seen WHERE msgid = ?", (msgid,)).fetchone()
        return row[0] if row else None

    # -- classifying --------------------------------------------------------------------------
    def probability(self, tokens: set[str]) -> float | None:
        """Spam probability of a token set, or None while too little has been learned (or
        it was learned with another tokenizer: learn it again from scratch)."""
        nspam, nham = self.totals()
        if nspam < self.min_learned or nham < self.min_learned:
            return None
        if self.tokenizer_version() != TOKENIZER_VERSION:
            return None
        ids = {token_id(t): t for t in tokens}
        counts = self.counts(list(ids))
        probs = []
        for s, h in counts.values():
            if s + h == 0:
                continue
            spam_ratio = s / nspam
            ham_ratio = h / nham
            p = spam_ratio / (spam_ratio + ham_ratio)
            n = s + h
            f = (S_CONSTANT * X_CONSTANT + n * p) / (S_CONSTANT + n)
            if abs(f - 0.5) >= MIN_PROB_STRENGTH:
                probs.append(f)
        if not probs:
            return 0.5
        probs.sort(key=lambda f: -abs(f - 0.5))
        probs = probs[:MAX_TOKENS_USED]
        n = len(probs)
        ln_spam = sum(math.log(max(1e-300, 1.0 - f)) for f in probs)
        ln_ham = sum(math.log(max(1e-300, f)) for f in probs)
        s_val = 1.0 - chi2q(-2.0 * ln_spam, 2 * n)
        h_val = 1.0 - chi2q(-2.0 * ln_ham, 2 * n)
        return max(0.0, min(1.0, (1.0 + s_val - h_val) / 2.0))

    # -- learning -----------------------------------------------------------------------------
    def learn(self, tokens: set[str], msgid: str, is_spam: bool, *, forget: bool = False) -> bool:
        """Count (or un-count) a message's tokens; False when there is nothing to change."""
        verdict = "spam" if is_spam else "ham"
        with self.batch():
            previous = self.seen(msgid)
            if forget:
                if previous is None:
                    return False
                self._apply(tokens, previous, -1)
                self.conn.execute("DELETE FROM seen WHERE msgid = ?", (msgid,))
                return True
            if previous == verdict:
                return False
            if previous is not None:
                self._apply(tokens, previous, -1)
            self._apply(tokens, verdict, +1)
            self.conn.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (msgid, verdict))
            return True

    def _apply(self, tokens: set[str], verdict: str, delta: int) -> None:
        now = int(time.time())
        ds, dh = (delta, 0) if verdict == "spam" else (0, delta)
        conn = self.conn
        rows = [(token_id(t), ds, dh, now) for t in tokens]
        if delta > 0:
            conn.executemany(
                "INSERT INTO tokens (id, spam, ham, atime) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET spam = spam + excluded.spam, "
                "ham = ham + excluded.ham, atime = excluded.atime", rows)
        else:
            conn.executemany("UPDATE tokens SET spam = max(0, spam + ?), ham = max(0, ham + ?) "
                             "WHERE id = ?", [(ds, dh, r[0]) for r in rows])
            conn.execute("DELETE FROM tokens WHERE spam = 0 AND ham = 0")
        conn.execute("UPDATE totals SET value = max(0, value + ?) WHERE name = ?",
                     (delta, verdict))

    def maybe_expire(self) -> int:
        """Expire when the database has grown 10% past `max_tokens` (cheap to call often)."""
        count = self.conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
        if count <= self.max_tokens * 1.1:
            return 0
        return self.expire()

    def expire(self, max_tokens: int | None = None) -> int:
        """Drop the least recently learned tokens beyond `max_tokens`; returns how many."""
        limit = max_tokens if max_tokens is not None else self.max_tokens
        with self.batch():
            total = self.conn.execute("SELECT count(*) FROM tokens").fetchone()[0]
            excess = total - limit
            if excess <= 0:
                return 0
            self.conn.execute("DELETE FROM tokens WHERE id IN (SELECT id FROM tokens "
                              "ORDER BY atime ASC, (spam + ham) ASC LIMIT ?)", (excess,))
            return excess


class BayesDatabases:
    """The site-wide store and, when enabled, one store per user (`bayes/USER.sqlite3`)."""

    def __init__(self, site_path: str | Path, *, per_user: bool = False, min_learned: int = 200):
        self.site_path = Path(site_path)
        self.per_user = per_user
        self.min_learned = min_learned
        self._stores: dict[str, BayesStore] = {}

    def store(self, user: str | None = None) -> BayesStore:
        key = ""
        if self.per_user and user:
            key = re.sub(r"[^A-Za-z0-9@._+-]", "_", user.lower())[:200] or "_"
        if key not in self._stores:
            path = self.site_path if not key else \
                self.site_path.parent / "bayes" / f"{key}.sqlite3"
            self._stores[key] = BayesStore(path, min_learned=self.min_learned)
        return self._stores[key]

    def learn(self, message: bytes, is_spam: bool, *, user: str | None = None,
              forget: bool = False) -> bool:
        """Learn (or forget) one message without loading any rules."""
        msg = ParsedMessage.parse(message)
        return self.store(user).learn(tokenize(msg), message_id(msg), is_spam, forget=forget)

    def stores(self) -> list[BayesStore]:
        """The stores opened so far."""
        return list(self._stores.values())

    def all_paths(self) -> list[Path]:
        paths = [self.site_path] if self.site_path.exists() else []
        user_dir = self.site_path.parent / "bayes"
        if user_dir.is_dir():
            paths += sorted(user_dir.glob("*.sqlite3"))
        return paths

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
