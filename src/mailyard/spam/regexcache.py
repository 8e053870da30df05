"""A disk cache of compiled regexes, so a worker loads thousands of rules in a blink.

Compiling a pattern with the `regex` module is mostly Python work (parsing, code generation)
ending in one call to the C function `_regex.compile(...)` with plain data (the pattern,
flags, a list of opcodes, group tables). `CompiledCache.compile` records those arguments the
first time a pattern is compiled and, on later runs, calls the C function with them directly.

The cache is an optimisation only: it is keyed by the `regex` version, pattern and flags; a
missing, stale or unreadable file, or any error replaying an entry, falls back to a normal
compile. It lives in data_dir (`spam-regex.cache`), written atomically.
"""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import regex
import regex._main as _regex_main

_VERSION = (regex.__version__, 4)
_lock = threading.Lock()


class CompiledCache:
    """Compiled-pattern arguments by (pattern, flags), persisted with pickle."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.entries: dict[tuple[str, int], tuple] = {}
        self.used: dict[tuple[str, int], tuple] = {}
        self.literal_entries: dict[tuple[str, int], object] = {}
        self.literal_used: dict[tuple[str, int], object] = {}
        self.ascii_entries: dict[tuple[str, int], str | None] = {}
        self.ascii_used: dict[tuple[str, int], str | None] = {}
        self.hits = 0
        if self.path is not None and self.path.exists():
            try:
                with self.path.open("rb") as fh:
                    version, entries, literals, ascii_forms = pickle.load(fh)
                if version == _VERSION:
                    self.entries, self.literal_entries = entries, literals
                    self.ascii_entries = ascii_forms
            except Exception:
                self.entries = {}

    def compile(self, pattern: str, flags: int):
        key = (pattern, flags)
        args = self.entries.get(key)
        if args is not None:
            try:
                compiled = _regex_main._regex.compile(*args)
                self.used[key] = args
                self.hits += 1
                return compiled
            except Exception:
                pass
        captured: list[tuple] = []
        with _lock:
            real = _regex_main._regex.compile

            def capture(*a):
                captured.append(a)
                return real(*a)

            _regex_main._regex.compile = capture
            try:
                compiled = regex.compile(pattern, flags, cache_pattern=False)
            finally:
                _regex_main._regex.compile = real
        if captured:
            self.used[key] = captured[-1]
        return compiled

    def literals(self, pattern: str, flags: int):
        """`prefilter.required_literals`, remembered like the compiled code."""
        key = (pattern, flags)
        if key in self.literal_entries:
            value = self.literal_entries[key]
        else:
            from mailyard.spam.prefilter import required_literals

            value = required_literals(pattern, flags)
        self.literal_used[key] = value
        return value

    def ascii_variant(self, pattern: str, flags: int) -> str | None:
        """`asciire.ascii_variant`, remembered like the compiled code."""
        key = (pattern, flags)
        if key in self.ascii_entries:
            value = self.ascii_entries[key]
        else:
            from mailyard.spam.asciire import ascii_variant

            value = ascii_variant(pattern, flags)
        self.ascii_used[key] = value
        return value

    def save(self) -> None:
        """Write the entries used by this load (atomically); errors are ignored."""
        if self.path is None or (self.used.keys() == self.entries.keys() and
                                 self.literal_used.keys() == self.literal_entries.keys() and
                                 self.ascii_used.keys() == self.ascii_entries.keys()):
            return
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as fh:
                pickle.dump((_VERSION, self.used, self.literal_used, self.ascii_used), fh,
                            protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
