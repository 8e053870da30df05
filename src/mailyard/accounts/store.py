"""The accounts database: domains, users, password hashes, aliases, quotas (SQLite).

Only this module touches `data_dir/accounts.sqlite3`. Reads are cheap and safe from any
thread (one connection guarded by a lock; WAL so the CLI can write while a server reads).
The set of local domains is cached and re-read when SQLite's `data_version` says another
connection (the `mailyard` CLI) changed the database, so `mailyard domain add` takes effect
in a running server without a reload.

Recipient resolution (`resolve`), in order, the first that matches wins:
  1. an alias for the exact address (one-to-many, expanded recursively, loops cut);
  2. a user with that address;
  3. plus-addressing: `alice+news@d` → as `alice@d` by rules 1–2;
  4. the domain's catch-all alias `@d`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailyard.accounts.addresses import (
    AddressError,
    normalize_address,
    normalize_domain,
    split_address,
)
from mailyard.accounts.passwords import hash_password, needs_upgrade, verify_password

SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    address TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    password TEXT NOT NULL,
    quota_bytes INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    PRIMARY KEY (source, target)
);
"""

MAX_ALIAS_DEPTH = 10
PLUS_SEPARATOR = "+"


class AccountError(Exception):
    """A refused account operation, with a message for the operator."""


@dataclass(frozen=True)
class User:
    address: str
    domain: str
    quota_bytes: int          # 0 = unlimited
    enabled: bool
    created: float


@dataclass(frozen=True)
class Alias:
    source: str               # "local@domain" or "@domain" (catch-all)
    target: str


class AccountStore:
    """Domains, users and aliases; see the module docstring for resolution rules."""

    def __init__(self, path: Path, data_dir: Path, config_domains: Iterable[str] = ()):
        self.path = Path(path)
        self.data_dir = Path(data_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._config_domains = {normalize_domain(d) for d in config_domains}
        self._domains_cache: frozenset[str] | None = None
        self._domains_checked = 0.0
        self._data_version = -1

    @classmethod
    def open(cls, settings) -> AccountStore:
        return cls(settings.data_path / "accounts.sqlite3", settings.data_path,
                   settings.server.domains)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reload(self) -> None:
        with self._lock:
            self._domains_cache = None

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, statements: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self._db.execute(sql, args)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._domains_cache = None

    # -- domains -----------------------------------------------------------------------
    # How often (seconds) the cached domain set asks SQLite whether another connection changed
    # the database: every RCPT and every routed recipient asks, so this is a hot path.
    DOMAINS_RECHECK = 1.0

    def _domains(self, fresh: bool = False) -> frozenset[str]:
        """The local domains; `fresh` re-asks SQLite now (after a miss: a domain the CLI just
        added must be local at once, while hits stay cheap)."""
        now = time.monotonic()
        cache = self._domains_cache
        if cache is not None and not fresh and now < self._domains_checked + self.DOMAINS_RECHECK:
            return cache
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if self._domains_cache is None or version != self._data_version:
                rows = self._db.execute("SELECT name FROM domains").fetchall()
                self._domains_cache = frozenset({r[0] for r in rows} | self._config_domains)
                self._data_version = version
            self._domains_checked = now
            return self._domains_cache

    def local_domains(self) -> set[str]:
        return set(self._domains())

    def is_local_domain(self, domain: str) -> bool:
        if domain in self._domains():          # the common case: already normalised
            return True
        try:
            return normalize_domain(domain) in self._domains(fresh=True)
        except AddressError:
            return False

    def add_domain(self, domain: str) -> str:
        name = normalize_domain(domain)
        if self._q("SELECT 1 FROM domains WHERE name=?", (name,)):
            raise AccountError(f"domain {name} already exists")
        self._write([("INSERT INTO domains(name, created) VALUES (?, ?)", (name, time.time()))])
        return name

    def remove_domain(self, domain: str, force: bool = False) -> None:
        name = normalize_domain(domain)
        if not self._q("SELECT 1 FROM domains WHERE name=?", (name,)):
            raise AccountError(f"no such domain: {name}")
        users = self._q("SELECT count(*) FROM users WHERE domain=?", (name,))[0][0]
        if users and not force:
            raise AccountError(f"domain {name} still has {users} user(s); remove them first "
                               f"or use --force (their mail stays on disk)")
        self._write([("DELETE FROM domains WHERE name=?", (name,)),
                     ("DELETE FROM users WHERE domain=?", (name,)),
                     ("DELETE FROM aliases WHERE source LIKE ?", (f"%@{name}",))])

    def list_domains(self) -> list[dict]:
        db = {r[0]: r[1] for r in self._q("SELECT name, created FROM domains ORDER BY name")}
        out = [{"domain": d, "source": "database", "users": self._count_users(d)}
               for d in sorted(db)]
        out += [{"domain": d, "source": "config", "users": self._count_users(d)}
                for d in sorted(self._config_domains - set(db))]
        return out

    def _count_users(self, domain: str) -> int:
        return self._q("SELECT count(*) FROM users WHERE domain=?", (domain,))[0][0]

    # -- users ---------------------------------------------------------------------------
    def add_user(self, address: str, password: str | None = None, *,
                 password_hash: str | None = None, quota_bytes: int = 0,
                 create_domain: bool = True) -> User:
        """Create a user; `password_hash` (with {SCHEME}) imports an existing hash."""
        addr = normalize_address(address)
        local, domain = addr.rsplit("@", 1)
        if PLUS_SEPARATOR in local:
            raise AccountError(f"{addr}: '+' is the sub-address separator and cannot be part "
                               f"of a user name")
        if self._q("SELECT 1 FROM users WHERE address=?", (addr,)):
            raise AccountError(f"user {addr} already exists")
        if password_hash is None:
            if not password:
                raise AccountError("a password is required (use --password-stdin)")
            password_hash = hash_password(password)
        statements = []
        if domain not in self.local_domains():
            if not create_domain:
                raise AccountError(f"{domain} is not a local domain; run "
                                   f"`mailyard domain add {domain}` first")
            statements.append(("INSERT OR IGNORE INTO domains(name, created) VALUES (?, ?)",
                               (domain, time.time())))
        statements.append(("INSERT INTO users(address, domain, password, quota_bytes, enabled,"
                           " created) VALUES (?, ?, ?, ?, 1, ?)",
                           (addr, domain, password_hash, quota_bytes, time.time())))
        self._write(statements)
        user = self.get_user(addr)
        assert user is not None
        return user

    def set_password(self, address: str, password: str) -> None:
        addr = normalize_address(address)
        if not self._q("SELECT 1 FROM users WHERE address=?", (addr,)):
            raise AccountError(f"no such user: {addr}")
        self._write([("UPDATE users SET password=? WHERE address=?",
                      (hash_password(password), addr))])

    def set_quota(self, address: str, quota_bytes: int) -> None:
        addr = normalize_address(address)
        if not self._q("SELECT 1 FROM users WHERE address=?", (addr,)):
            raise AccountError(f"no such user: {addr}")
        self._write([("UPDATE users SET quota_bytes=? WHERE address=?", (quota_bytes, addr))])

    def remove_user(self, address: str) -> None:
        addr = normalize_address(address)
        if not self._q("SELECT 1 FROM users WHERE address=?", (addr,)):
            raise AccountError(f"no such user: {addr}")
        self._write([("DELETE FROM users WHERE address=?", (addr,))])

    def get_user(self, address: str) -> User | None:
        try:
            addr = normalize_address(address)
        except AddressError:
            return None
        rows = self._q("SELECT address, domain, quota_bytes, enabled, created FROM users "
                       "WHERE address=?", (addr,))
        if not rows:
            return None
        a, d, q, e, c = rows[0]
        return User(a, d, q, bool(e), c)

    def list_users(self, domain: str | None = None) -> list[User]:
        if domain:
            rows = self._q("SELECT address, domain, quota_bytes, enabled, created FROM users "
                           "WHERE domain=? ORDER BY address", (normalize_domain(domain),))
        else:
            rows = self._q("SELECT address, domain, quota_bytes, enabled, created FROM users "
                           "ORDER BY domain, address")
        return [User(a, d, q, bool(e), c) for a, d, q, e, c in rows]

    def authenticate(self, login: str, password: str) -> str | None:
        """The user's canonical address if `password` is right, else None (CPU-heavy)."""
        try:
            addr = normalize_address(login)
        except AddressError:
            return None
        rows = self._q("SELECT password, enabled FROM users WHERE address=?", (addr,))
        if not rows or not rows[0][1]:
            # Spend comparable time on unknown users so logins cannot probe for them.
            verify_password(_DUMMY_HASH, password)
            return None
        stored = rows[0][0]
        if not verify_password(stored, password):
            return None
        if needs_upgrade(stored):
            self._write([("UPDATE users SET password=? WHERE address=? AND password=?",
                          (hash_password(password), addr, stored))])
        return addr

    def maildir_path(self, user_address: str) -> Path:
        """data_dir/mail/DOMAIN/LOCAL/Maildir for a user's canonical address."""
        local, domain = split_address(user_address)
        if local.startswith('"') or "/" in local or local in (".", ".."):
            safe_local = local.replace("/", "%2F").replace('"', "")
            safe_local = safe_local if safe_local not in ("", ".", "..") else f"_{safe_local}"
        else:
            safe_local = local
        return self.data_dir / "mail" / domain / safe_local / "Maildir"

    # -- aliases ---------------------------------------------------------------------------
    @staticmethod
    def _alias_source(source: str) -> str:
        if source.startswith("@"):
            return "@" + normalize_domain(source[1:])
        return normalize_address(source)

    def add_alias(self, source: str, targets: Iterable[str] | str) -> list[Alias]:
        src = self._alias_source(source)
        if isinstance(targets, str):
            targets = [targets]
        norm_targets = [normalize_address(t) for t in targets]
        if not norm_targets:
            raise AccountError("an alias needs at least one target")
        src_domain = src.rsplit("@", 1)[1]
        statements = []
        if src_domain not in self.local_domains():
            raise AccountError(f"{src_domain} is not a local domain; run "
                               f"`mailyard domain add {src_domain}` first")
        for t in norm_targets:
            if t == src:
                raise AccountError(f"alias {src} cannot point to itself")
            statements.append(("INSERT OR IGNORE INTO aliases(source, target) VALUES (?, ?)",
                               (src, t)))
        self._write(statements)
        return [Alias(src, t) for t in norm_targets]

    def remove_alias(self, source: str, target: str | None = None) -> int:
        src = self._alias_source(source)
        if target is None:
            n = self._q("SELECT count(*) FROM aliases WHERE source=?", (src,))[0][0]
            self._write([("DELETE FROM aliases WHERE source=?", (src,))])
        else:
            tgt = normalize_address(target)
            n = self._q("SELECT count(*) FROM aliases WHERE source=? AND target=?",
                        (src, tgt))[0][0]
            self._write([("DELETE FROM aliases WHERE source=? AND target=?", (src, tgt))])
        if not n:
            raise AccountError(f"no such alias: {src}" + (f" -> {target}" if target else ""))
        return n

    def list_aliases(self) -> list[Alias]:
        return [Alias(s, t) for s, t in
                self._q("SELECT source, target FROM aliases ORDER BY source, target")]

    # -- resolution --------------------------------------------------------------------
    def resolve(self, address: str) -> list[str]:
        """Final targets for a recipient: local users' addresses and/or external addresses.

        [] means unknown here (reply 550 5.1.1 when the domain is local).
        """
        try:
            addr = normalize_address(address)
        except AddressError:
            return []
        if addr.rsplit("@", 1)[1] not in self._domains(fresh=True):
            return []
        out: list[str] = []
        self._expand(addr, out, set(), 0)
        return out

    def _expand(self, addr: str, out: list[str], seen: set[str], depth: int) -> bool:
        if addr in seen or depth > MAX_ALIAS_DEPTH:
            return True
        seen.add(addr)
        local, domain = addr.rsplit("@", 1)
        if domain not in self._domains():
            if addr not in out:
                out.append(addr)  # an alias pointing outside: forward
            return True
        candidates = [addr]
        if PLUS_SEPARATOR in local:
            candidates.append(f"{local.split(PLUS_SEPARATOR, 1)[0]}@{domain}")
        for cand in candidates:
            targets = [r[0] for r in self._q("SELECT target FROM aliases WHERE source=?",
                                             (cand,))]
            if targets:
                for t in targets:
                    self._expand(t, out, seen, depth + 1)
                return True
            rows = self._q("SELECT enabled FROM users WHERE address=?", (cand,))
            if rows:
                if rows[0][0] and cand not in out:
                    out.append(cand)
                return True
        targets = [r[0] for r in self._q("SELECT target FROM aliases WHERE source=?",
                                         (f"@{domain}",))]
        for t in targets:
            self._expand(t, out, seen, depth + 1)
        return bool(targets)

    # -- Dovecot import --------------------------------------------------------------------
    def import_passwd_file(self, path: Path, default_domain: str | None = None,
                           replace: bool = False) -> tuple[list[str], list[str]]:
        """Import a Dovecot passwd-file (`user:{SCHEME}hash:uid:gid:gecos:home:shell:extra`).

        Returns (imported addresses, problems as "FILE:LINE: reason").
        """
        imported, problems = [], []
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            fields = line.split(":")
            if len(fields) < 2 or not fields[0] or not fields[1]:
                problems.append(f"{where}: expected user:{{SCHEME}}hash:...")
                continue
            user, stored = fields[0], fields[1]
            extra = ":".join(fields[7:]) if len(fields) > 7 else ""
            if "@" not in user:
                if not default_domain:
                    problems.append(f"{where}: {user!r} has no domain; use --domain")
                    continue
                user = f"{user}@{default_domain}"
            try:
                from mailyard.accounts.passwords import split_scheme

                split_scheme(stored)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            quota = _quota_from_extra(extra)
            try:
                if replace and self.get_user(user):
                    self.remove_user(user)
                self.add_user(user, password_hash=stored, quota_bytes=quota)
                imported.append(normalize_address(user))
            except (AccountError, AddressError) as exc:
                problems.append(f"{where}: {exc}")
        return imported, problems


def _quota_from_extra(extra: str) -> int:
    """`userdb_quota_rule=*:storage=1G` (Dovecot extra field) → bytes; 0 if absent."""
    for item in extra.split():
        key, _, value = item.partition("=")
        if key in ("userdb_quota_rule", "quota_rule"):
            _, _, rule = value.partition(":")
            k, _, size = rule.partition("=")
            if k in ("storage", "bytes"):
                try:
                    return parse_size(size)
                except ValueError:
                    return 0
    return 0


def parse_size(text: str) -> int:
    """`100M`, `2G`, `512k`, `1048576` → bytes (Dovecot units: k/M/G/T, also with B)."""
    t = text.strip().upper().removesuffix("B")
    mult = 1
    for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    if not t.isdigit():
        raise ValueError(f"not a size: {text!r} (like 500M or 2G)")
    return int(t) * mult


_DUMMY_HASH = hash_password("mailyard-dummy-password-for-timing")
