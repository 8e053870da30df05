"""The virus engine: bytes in, `ScanVerdict` out.

Theory of operation: `VirusEngine` loads a signature database once (hash tables, the
anchored body signatures and one compiled YARA-X rule set for the rest, see `matcher`),
then each `scan_*` call walks one input as a tree
of objects: the input itself, the decoded parts of a message, the members of an archive,
the contents of a compressed stream. Each object is checked against the allowlist, the
hash signatures (only for sizes some signature has) and the body/logical signatures, then
opened if it is a container. The walk stops at the first signature found (unless
`allmatch`) and at the first limit hit (`archives.Budget`): depth, bytes, files, ratio,
time. The engine holds no per-scan state, so one instance serves many threads; it knows
nothing of sockets, queues or files other than its database.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import threading
import time
import weakref
from pathlib import Path

import yara_x

from mailyard.antivirus import archives, filetype, mime
from mailyard.antivirus.database import SignatureDatabase, database_sources, load_database, no_gc
from mailyard.antivirus.from_config import (  # noqa: F401 - re-exported
    ENGINE_VERSION,
    cache_dir_for,
    limits_from_settings,
    uses_builtin,
)
from mailyard.antivirus.matcher import Matcher
from mailyard.antivirus.verdict import (
    LIMIT_RECURSION,
    LIMIT_SCAN_SIZE,
    LIMIT_SCAN_TIME,
    Attachment,
    ScanLimits,
    ScanOptions,
    ScanVerdict,
)

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature"
# Seconds the fork server's cache writer waits after the first worker is forked.
CACHE_WRITE_DELAY = 1.0


class VirusEngine:
    """Signatures loaded once; thread-safe `scan_message` / `scan_bytes`.

    `VirusEngine(database_dir=None, limits=ScanLimits())`; `database_dir` is a ClamAV-style
    directory (or one database file). Parse problems never raise: see `errors` (file:line:
    reason) and `database.unsupported` (counts of features we skip).
    """

    def __init__(self, database_dir=None, limits: ScanLimits | None = None,
                 builtin_eicar: bool = True, cache_dir=None, cache_after_fork: bool = False):
        started = time.monotonic()
        if isinstance(database_dir, (list, tuple)):
            database_dir = [str(d) for d in database_dir] or None
        self.database_dir = database_dir if not database_dir or isinstance(
            database_dir, list) else str(database_dir)
        self.limits = limits or ScanLimits()
        self.from_cache = False
        self._saver: threading.Thread | None = None
        self._pending_save: tuple | None = None  # the writer's arguments, until it starts
        # In the pool's fork server (`worker.preload`) the compiled cache is written only
        # after the first worker is forked (see `_start_saver`).
        self._cache_after_fork = cache_after_fork
        self._saver_lock = threading.Lock()
        self.database, self.matcher = self._load(database_dir, cache_dir)
        self.errors: list[str] = self.database.errors + self.matcher.errors
        self._hash_algorithms = sorted(set(self.database.hashes.algorithms())
                                       | set(self.database.allow.algorithms()))
        # ClamAV 1.x ships no built-in EICAR; we detect it unless a database already does,
        # so names stay those of the database when one has them.
        self.eicar_builtin = builtin_eicar and not self._match(EICAR, "text")
        self.load_seconds = time.monotonic() - started

    def _load(self, database_dir, cache_dir) -> tuple[SignatureDatabase, Matcher]:
        """Parse the database; with `cache_dir`, reuse the compiled body/logical signatures
        of an unchanged database (key: every file's name, size and mtime, and the engine
        and YARA-X versions), which makes a reload or a new pool worker fast."""
        if not cache_dir or not database_dir:
            with no_gc():
                database = load_database(database_dir)
                return database, Matcher(database)
        key = _cache_key(database_dir)
        cache_dir = Path(cache_dir)
        cached = Matcher.load(cache_dir, key)
        if cached is None:
            # Several pool workers start at once: one compiles, the others wait on the lock
            # and then read its cache instead of compiling the same rules in parallel.
            lock = _CacheLock(cache_dir).__enter__()
            try:
                cached = Matcher.load(cache_dir, key)
                if cached is None:
                    with no_gc():
                        database = load_database(database_dir)
                        matcher = Matcher(database)
                    # The engine is ready now; the cache is written beside the first scans,
                    # and the lock released when it is complete.
                    self._pending_save = (database, matcher, cache_dir, key, lock)
                    self._start_saver()
                    lock = None
                    return database, matcher
            finally:
                if lock is not None:
                    lock.__exit__(None, None, None)
        matcher, meta = cached
        database = SignatureDatabase(
            hashes=meta["hashes"], allow=meta["allow"], ignored=meta["ignored"],
            sections=meta["sections"], errors=meta["db_errors"],
            unsupported=meta["unsupported"], files=meta["files"], cached_count=meta["count"])
        self.from_cache = True
        return database, matcher

    def _start_saver(self) -> None:
        """Start the cache writer: now, or in the fork server once it has forked its first
        worker, and then after `CACHE_WRITE_DELAY` seconds. Until then the fork server's
        only thread is the one that forks, the first workers fork at once (the writer would
        hold the GIL through its long pickling and serializing calls, and compete for the
        cores while the first scans run), and the writer's lock keeps other loaders waiting
        as before."""
        if not self._cache_after_fork:
            self._begin_save(0.0)
            return
        os.register_at_fork(after_in_parent=lambda: self._begin_save(CACHE_WRITE_DELAY))

    def _begin_save(self, delay: float) -> None:
        """Start the writer, once (later calls do nothing)."""
        with self._saver_lock:
            if self._pending_save is not None:
                self._saver = threading.Thread(target=self._save, name="antivirus-cache",
                                               args=(*self._pending_save, delay))
                self._pending_save = None
                self._saver.start()

    def wait_cache(self) -> None:
        """Wait until the compiled cache this engine writes in the background is on disk
        (starting the writer now if it waits for a fork)."""
        self._begin_save(0.0)
        if self._saver is not None:
            self._saver.join()

    @staticmethod
    def _save(database: SignatureDatabase, matcher: Matcher, cache_dir: Path, key: str,
              lock: _CacheLock, delay: float) -> None:
        try:
            # Lowest CPU priority for this thread (Linux: a thread id is a process id
            # here): the cache must not slow the first scans it runs beside.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        if delay:
            time.sleep(delay)
        try:
            matcher.save(cache_dir, key, {
                "db_errors": list(database.errors), "unsupported": database.unsupported,
                "count": len(database.body) + len(database.logical),
                "hashes": database.hashes, "allow": database.allow,
                "sections": database.sections,
                "ignored": database.ignored, "files": database.files})
        except OSError:
            pass  # no cache this time; scanning is unaffected
        finally:
            lock.__exit__(None, None, None)

    @classmethod
    def from_settings(cls, settings):
        """The configured engine: built-in, or a `ClamdBackend` when `[antivirus] backend`
        names a clamd socket (same interface)."""
        if not uses_builtin(settings):
            from mailyard.antivirus.backend import ClamdBackend

            return ClamdBackend(settings.antivirus.backend, limits_from_settings(settings))
        return cls(settings.antivirus.databases or None, limits_from_settings(settings),
                   cache_dir=cache_dir_for(settings))

    @property
    def signature_count(self) -> int:
        return self.database.signature_count + (1 if self.eicar_builtin else 0)

    # -- public scans --------------------------------------------------------------------
    def scan_message(self, message: bytes, options: ScanOptions | None = None) -> ScanVerdict:
        """Scan an RFC 5322 message: the raw text, then every decoded part, recursively."""
        return self._run(message, "mail", None, options or ScanOptions())

    def scan_bytes(self, data: bytes, name: str | None = None,
                   options: ScanOptions | None = None) -> ScanVerdict:
        """Scan a file's content; its type (archive, mail, ...) is detected from the bytes."""
        return self._run(data, None, name, options or ScanOptions())

    # -- internals -----------------------------------------------------------------------
    def _run(self, data: bytes, kind: str | None, name: str | None,
             options: ScanOptions) -> ScanVerdict:
        walk = _Walk(self, options)
        try:
            walk.visit(data, 0, kind)
        except archives.LimitHit:
            pass  # recorded in the budget
        names = list(walk.names)
        limit = walk.budget.hit
        if limit and self.limits.alert_exceeded and not names:
            names.append(limit)
        return ScanVerdict(infected=bool(names), names=tuple(names), limits_exceeded=limit,
                           encrypted=walk.encrypted, attachments=tuple(walk.attachments))

    def _digests(self, data: bytes) -> dict[str, str]:
        size = len(data)
        db = self.database
        return {algorithm: hashlib.new(algorithm, data).hexdigest()
                for algorithm in self._hash_algorithms
                if db.hashes.wanted(algorithm, size) or db.allow.wanted(algorithm, size)}

    def _match(self, data: bytes, kind: str, timeout: float | None = None,
               container: str | None = None) -> list[str]:
        """Signature names matching one object (no recursion)."""
        found: list[str] = []
        size = len(data)
        digests = self._digests(data) if self._hash_algorithms else {}
        db = self.database
        for algorithm, digest in digests.items():
            if db.allow.wanted(algorithm, size) and db.allow.lookup(algorithm, digest, size):
                return []  # .fp/.sfp: this exact file is known to be clean
        for algorithm, digest in digests.items():
            if db.hashes.wanted(algorithm, size):
                hit = db.hashes.lookup(algorithm, digest, size)
                if hit:
                    found.append(hit)
        if kind == "pe" and len(db.sections):
            found += self._section_hits(data)
        code = filetype.CONTAINER_CODES.get(container or "", 0)
        found += self.matcher.scan(data, filetype.TARGETS.get(kind, 0), timeout, code)
        if kind in ("text", "html"):
            # ClamAV also matches the normalized text (lower case, white space squeezed);
            # for HTML we do the same, a subset of its HTML normalization, and keep the raw
            # match too (ClamAV does not, so we may find more in HTML, never less).
            target = filetype.TARGET_TEXT if kind == "text" else filetype.TARGETS["html"]
            for name in self.matcher.scan(filetype.normalize_text(data), target, timeout, code):
                if name not in found:
                    found.append(name)
        if getattr(self, "eicar_builtin", False) and data[:len(EICAR)] == EICAR \
                and not data[len(EICAR):].strip(b" \t\r\n\x1a"):
            found.append(EICAR_NAME)
        return found


    def _section_hits(self, data: bytes) -> list[str]:
        """`.mdb`/`.msb`: hashes of a PE file's sections (raw data, SizeOfRawData bytes)."""
        sections = self.database.sections
        found = []
        for start, size in filetype.pe_sections(data):
            for algorithm in sections.algorithms():
                if sections.wanted(algorithm, size):
                    digest = hashlib.new(algorithm, data[start:start + size]).hexdigest()
                    hit = sections.lookup(algorithm, digest, size)
                    if hit and hit not in found:
                        found.append(hit)
        return found


class _Walk:
    """The state of one scan: findings, attachments seen, the limits budget."""

    def __init__(self, engine: VirusEngine, options: ScanOptions):
        self.engine = engine
        self.options = options
        self.budget = archives.Budget(engine.limits)
        self.names: list[str] = []
        self.attachments: list[Attachment] = []
        self.encrypted = False
        self.done = False

    def visit(self, data: bytes, depth: int, kind: str | None = None,
              container: str | None = None) -> None:
        if self.done:
            return
        self.budget.check_time()
        if depth > self.engine.limits.max_depth:
            self.budget.record(LIMIT_RECURSION)
            return
        kind = kind or filetype.detect(data)
        remaining = max(self.budget.deadline - time.monotonic(), 0.001)
        try:
            found = self.engine._match(data, kind, remaining, container)
        except yara_x.TimeoutError:
            self.budget.record(LIMIT_SCAN_TIME)
            raise archives.LimitHit(LIMIT_SCAN_TIME) from None
        except yara_x.ScanError:
            found = []  # YARA-X could not scan this object; its parts are still walked
        for name in found:
            if name not in self.names:
                self.names.append(name)
        if self.names and not self.options.allmatch:
            self.done = True
            return
        if kind in archives.DECOMPRESSORS and self.options.scan_archives:
            inner = archives.DECOMPRESSORS[kind](data, self.budget)
            inner_kind = filetype.detect(inner)
            self._seen("", "", inner_kind, depth + 1, len(inner))
            self.visit(inner, depth + 1, inner_kind, kind)
        elif kind in archives.UNPACKERS and self.options.scan_archives:
            for member in archives.UNPACKERS[kind](data, self.budget):
                if self.done:
                    break
                member_kind = filetype.detect(member.data) if member.data else "binary"
                guessed = mimetypes.guess_type(member.name)[0] or "application/octet-stream"
                self._seen(member.name, guessed, member_kind, depth + 1, len(member.data),
                           member.encrypted)
                if member.encrypted:
                    self.encrypted = True
                    continue
                self.visit(member.data, depth + 1, member_kind, kind)
        elif kind == "mail" and self.options.scan_mail:
            room = self.engine.limits.max_depth - depth
            if room <= 0:
                self.budget.record(LIMIT_RECURSION)
                return
            try:
                self._visit_parts(data, depth, room)
            except RecursionError:
                # The standard library's MIME parser recurses once per nested multipart;
                # thousands of levels (a hostile message) exhaust the stack.
                self.budget.record(LIMIT_RECURSION)

    def _visit_parts(self, data: bytes, depth: int, room: int) -> None:
        for part in mime.parts(data, room):
            if self.done:
                break
            self.budget.check_time()
            part_kind = filetype.detect(part.data)
            part_depth = depth + part.depth
            self._seen(part.name, part.content_type, part_kind, part_depth, len(part.data))
            self.budget.take(len(part.data))
            if self.budget.remaining < 0:
                self.budget.record(LIMIT_SCAN_SIZE)
                break
            self.visit(part.data, part_depth, part_kind, "mail")

    def _seen(self, name: str, content_type: str, detected: str, depth: int, size: int,
              encrypted: bool = False) -> None:
        self.attachments.append(Attachment(name, content_type, detected, depth, size, encrypted))


class _CacheLock:
    """An exclusive flock on cache_dir/.lock (no-op when the directory cannot be made).

    A process forked while the lock is held (the pool's fork server forks workers while
    its cache writer still runs) closes its copy at once: an flock lasts until every
    descriptor of it is closed, and a worker's copy would keep it held for good."""

    _held: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, directory: Path):
        self.directory = directory
        self.file = None

    def __enter__(self):
        import fcntl

        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.file = open(self.directory / ".lock", "a")
            fcntl.flock(self.file, fcntl.LOCK_EX)
            _CacheLock._held.add(self)
        except OSError:
            self.file = None
        return self

    def __exit__(self, *exc):
        _CacheLock._held.discard(self)
        if self.file is not None:
            self.file.close()  # releases the lock
            self.file = None

    @classmethod
    def _forget_in_child(cls) -> None:
        for lock in list(cls._held):
            if lock.file is not None:
                lock.file.close()  # our copy of the descriptor; the parent keeps the lock
                lock.file = None
        cls._held = weakref.WeakSet()


os.register_at_fork(after_in_child=_CacheLock._forget_in_child)


def _cache_key(database_dir) -> str:
    from importlib.metadata import version

    h = hashlib.sha256(f"{ENGINE_VERSION}|yara-x {version('yara-x')}".encode())
    for path in database_sources(database_dir):
        st = path.stat()
        h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]
