"""One Hyperscan pass per text instead of hundreds of regex searches: a superset prefilter.

Theory of operation: `RuleAutomaton.build(rules)` takes the body, rawbody, full and uri
rules with a regex, rewrites each regex into a Hyperscan expression that matches at least
wherever the regex can (`mailyard.spam.hsre.superset_expression`) and compiles them, a few
dozen per database, in Hyperscan's prefilter and single-match modes. At scan time
`silent(kind, text)` runs the databases of that rule type once over the text and returns the
names of the gated rules Hyperscan did *not* report: their regexes cannot match, so the
engine records them as misses without running them. Rules Hyperscan did report, and rules
whose regex could not be rewritten, run their regex exactly as before — the automaton only
skips work, it never decides a hit, so verdicts stay those of the `regex` module.

URI rules test each URI on its own; the automaton scans them joined by newlines, which can
only report more (a rewritten expression has no anchors or other assertions left). Header
rules likewise: one scan over every header text the rules read (and their `[if-unset: ...]`
texts) joined; a header rule it does not report cannot match its own text, so its result is
known (0, or 1 for a `!~` rule).

Compiling the stock SpamAssassin rules takes tens of seconds, so the compiled databases are
cached on disk in `cache_dir` (data_dir next to `spam-regex.cache`, else the user's cache
directory): a JSON index and Hyperscan's own serialised databases, no pickle, keyed by a hash
of the Hyperscan version, this module's version and every gated rule's kind, name, pattern
and flags; under a lock, so that worker processes starting together compile once. Without
the `hyperscan` package (or on a CPU it does not support) `RuleAutomaton.build` returns None
and the engine runs every regex as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from mailyard.log import get_logger
from mailyard.spam.hsre import NEVER, superset_expression

try:
    import hyperscan
except ImportError:  # pragma: no cover - the dependency is pinned; this is the fallback
    hyperscan = None

log = get_logger("spam")

KINDS = ("body", "rawbody", "full", "uri", "header")
CHUNK = 32              # expressions per database: compile time grows faster than linearly
MAX_EXPRESSION = 8000   # longer rewritten expressions are tried in their coarse form
_VERSION = "automaton-2"   # bump with any change to the rewrite (hsre) or the layout
_CACHE_PREFIX = "spam-automaton-"
_KEEP_CACHES = 8
_MAGIC = b"mailyard-automaton-1\n"


def default_cache_dir() -> Path:
    """Where compiled databases are kept when the engine has no data directory."""
    if os.environ.get("MAILYARD_CACHE_DIR"):
        return Path(os.environ["MAILYARD_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mailyard"


@dataclass
class _Database:
    kind: str
    db: object
    names: tuple[str, ...]


class RuleAutomaton:
    """Hyperscan databases over the text rules; which rules cannot match a text."""

    def __init__(self, databases: list[_Database], never: dict[str, tuple[str, ...]]):
        self.databases = databases
        self.never = never
        self.by_kind: dict[str, list[_Database]] = {k: [] for k in KINDS}
        for d in databases:
            self.by_kind[d.kind].append(d)
        self.gated = {k: frozenset(n for d in self.by_kind[k] for n in d.names)
                      | frozenset(never.get(k, ())) for k in KINDS}
        self._zero = {k: dict.fromkeys(sorted(self.gated[k]), 0) for k in KINDS}
        self._local = threading.local()
        self.errors = 0
        self.header_keys: list[tuple[str, str]] = []
        self.if_unset: dict[tuple[str, str], list[str]] = {}
        self.negated: frozenset[str] = frozenset()
        self.unrecorded: frozenset[str] = frozenset()

    def bind(self, rules) -> RuleAutomaton:
        """Note what the header rules need at scan time (texts to read, `!~` rules)."""
        header_rules = [r for r in rules if r.kind == "header" and r.name in self.gated["header"]]
        self.header_keys = sorted({(r.header, r.modifier) for r in header_rules})
        self.if_unset: dict[tuple[str, str], list[str]] = {}
        for r in header_rules:
            if r.if_unset:
                unset = self.if_unset.setdefault((r.header, r.modifier), [])
                if r.if_unset not in unset:
                    unset.append(r.if_unset)
        self.negated = frozenset(r.name for r in header_rules if r.negate)
        # a `!~` rule known to hit is recorded even if nothing asks for it; with noautolearn
        # that could change the auto-learn decision, so such rules just run as before
        self.unrecorded = frozenset(r.name for r in header_rules
                                    if r.negate and "noautolearn" in r.tflags)
        return self

    # -- scanning ----------------------------------------------------------------------------
    def misses(self, ctx) -> dict[str, int]:
        """{rule: result} for every gated rule the scan of its text proves cannot match.

        `ctx` is the engine's ScanContext (rule_text, rule_uris, header_text).
        """
        gated = self.gated
        out: dict[str, int] = {}
        for kind in ("body", "rawbody", "full"):
            if gated[kind]:
                out.update(self.silent(kind, ctx.rule_text(kind)[0]))
        if gated["uri"]:
            out.update(self.silent("uri", "\n".join(ctx.rule_uris())))
        if gated["header"]:
            texts = []
            for key in self.header_keys:
                text = ctx.header_text(*key)
                if text is not None:
                    texts.append(text)
                elif key in self.if_unset:
                    texts.extend(self.if_unset[key])
            silent = self.silent("header", "\n".join(texts))
            for name in self.negated.intersection(silent):
                silent[name] = 1            # `!~`: the pattern cannot match, so the rule hits
            for name in self.unrecorded.intersection(silent):
                del silent[name]
            out.update(silent)
        return out

    def silent(self, kind: str, text: str) -> dict[str, int]:
        """{name: 0} for every gated rule of `kind` that cannot match `text` (octets)."""
        zero = self._zero[kind]
        databases = self.by_kind[kind]
        if not zero or not databases:
            return zero.copy()
        data = text.encode("latin-1")
        found: list[int] = []
        report = found.append

        def on_match(index, _start, _end, _flags, _context):
            report(index)

        local = self._local
        if getattr(local, "pid", None) != os.getpid():   # per thread, and anew after fork
            local.scratches = {k: [hyperscan.Scratch(d.db) for d in self.by_kind[k]]
                               for k in KINDS}
            local.pid = os.getpid()
        out = zero.copy()
        try:
            for database, scratch in zip(databases, local.scratches[kind]):
                del found[:]
                database.db.scan(data, match_event_handler=on_match, scratch=scratch)
                names = database.names
                for index in found:
                    out.pop(names[index], None)
        except Exception as exc:  # never let the prefilter cost a verdict: run every regex
            self.errors += 1
            log.warning("hyperscan scan failed, running the regexes: %r", exc)
            return {}
        return out

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(cls, rules, cache_dir: str | Path | None = None,
              expressions=None) -> RuleAutomaton | None:
        """Compile (or load from `cache_dir`) the databases for `rules`; None if unavailable.

        `expressions(pattern, flags)` (default `superset_expression`) lets the loader's
        regex cache remember the rewrites.
        """
        if hyperscan is None:
            return None
        rules = list(rules)
        automaton = cls._build(rules, cache_dir, expressions)
        return automaton.bind(rules) if automaton is not None else None

    @classmethod
    def _build(cls, rules, cache_dir, expressions) -> RuleAutomaton | None:
        gated = sorted((r.kind, r.name, r.pattern.pattern, r.pattern.flags)
                       for r in rules if r.kind in KINDS and r.pattern is not None
                       and _octets(r.if_unset or ""))
        if not gated:
            return cls([], {})
        digest = hashlib.sha256(repr((hyperscan.__version__, _VERSION, CHUNK, MAX_EXPRESSION,
                                      gated)).encode("utf-8", "surrogatepass")).hexdigest()
        path = Path(cache_dir) / f"{_CACHE_PREFIX}{digest[:24]}.hs" if cache_dir else None
        compile_ = lambda: cls._compile(gated, expressions or superset_expression)  # noqa: E731
        try:
            if path is None:
                return cls._from_blob(compile_())
            loaded = cls._load(path)
            if loaded is not None:
                return loaded
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = open(path.with_suffix(".lock"), "w")
            except OSError:             # no usable cache directory: compile, keep in memory
                return cls._from_blob(compile_())
            with lock:
                fcntl.flock(lock, fcntl.LOCK_EX)      # one process compiles, others wait
                loaded = cls._load(path)
                if loaded is not None:
                    return loaded
                blob = compile_()
                cls._save(path, blob)
                return cls._from_blob(blob)
        except Exception as exc:   # an unusable CPU, a broken database...: run every regex
            log.warning("hyperscan prefilter unavailable: %r", exc)
            return None

    @staticmethod
    def _compile(gated, expressions) -> dict:
        flags = (hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH
                 | hyperscan.HS_FLAG_ALLOWEMPTY)
        by_kind: dict[str, list[tuple[str, bytes]]] = {k: [] for k in KINDS}
        never: dict[str, list[str]] = {k: [] for k in KINDS}
        for kind, name, pattern, pflags in gated:
            expr = expressions(pattern, pflags)
            if expr is not None and len(expr) > MAX_EXPRESSION:
                expr = superset_expression(pattern, pflags, coarse=True)
            if expr is None or len(expr) > MAX_EXPRESSION:
                continue
            if expr == NEVER:
                never[kind].append(name)
            else:
                by_kind[kind].append((name, expr.encode("latin-1")))
        chunks = []
        for kind, items in by_kind.items():
            for start in range(0, len(items), CHUNK):
                part = items[start:start + CHUNK]
                data = _compile_chunk(part, flags)
                if data is not None:
                    chunks.append((kind, data, tuple(n for n, _ in part)))
        return {"chunks": chunks, "never": {k: tuple(v) for k, v in never.items()}}

    @classmethod
    def _from_blob(cls, blob: dict) -> RuleAutomaton:
        databases = [_Database(kind, hyperscan.loadb(data, hyperscan.HS_MODE_BLOCK), names)
                     for kind, data, names in blob["chunks"]]
        return cls(databases, blob["never"])

    @classmethod
    def _load(cls, path: Path) -> RuleAutomaton | None:
        try:
            automaton = cls._from_blob(_decode(path.read_bytes()))
        except Exception:
            return None
        try:
            os.utime(path)              # most recently used: kept when old ones are pruned
        except OSError:
            pass
        return automaton

    @staticmethod
    def _save(path: Path, blob: dict) -> None:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(_encode(blob))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            return
        olds = sorted(path.parent.glob(f"{_CACHE_PREFIX}*.hs"), key=_mtime, reverse=True)
        for old in olds[_KEEP_CACHES:]:
            try:
                old.unlink()
                old.with_suffix(".lock").unlink(missing_ok=True)
            except OSError:
                pass


def _encode(blob: dict) -> bytes:
    """The cache file: magic, JSON index (kinds, rule names, sizes), serialised databases."""
    index = {"never": blob["never"],
             "chunks": [[kind, list(names), len(data)] for kind, data, names in blob["chunks"]]}
    head = json.dumps(index).encode()
    return b"".join([_MAGIC, len(head).to_bytes(8, "big"), head,
                     *(data for _, data, _ in blob["chunks"])])


def _decode(raw: bytes) -> dict:
    if not raw.startswith(_MAGIC):
        raise ValueError("not an automaton cache")
    at = len(_MAGIC) + 8
    size = int.from_bytes(raw[len(_MAGIC):at], "big")
    index = json.loads(raw[at:at + size])
    at += size
    chunks = []
    for kind, names, length in index["chunks"]:
        chunks.append((kind, raw[at:at + length], tuple(names)))
        at += length
    if at != len(raw):
        raise ValueError("truncated automaton cache")
    return {"chunks": chunks, "never": {k: tuple(v) for k, v in index["never"].items()}}


def _octets(text: str) -> bool:
    return all(ord(c) < 256 for c in text)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _compile_chunk(part: list[tuple[str, bytes]], flags: int) -> bytes | None:
    """One serialised database; an expression Hyperscan rejects is left out (not gated)."""
    while part:
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        try:
            db.compile(expressions=[e for _, e in part], ids=list(range(len(part))),
                       elements=len(part), flags=flags)
            return hyperscan.dumpb(db)
        except hyperscan.error:
            bad = _first_bad(part, flags)
            if bad is None:
                raise
            part[:] = part[:bad] + part[bad + 1:]
    return None


def _first_bad(part: list[tuple[str, bytes]], flags: int) -> int | None:
    for index, (_name, expr) in enumerate(part):
        db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        try:
            db.compile(expressions=[expr], ids=[0], elements=1, flags=flags)
        except hyperscan.error:
            return index
    return None
