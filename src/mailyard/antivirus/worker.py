"""Scanning from a process pool: one `VirusEngine` per worker process.

The functions here are module-level so `ProcessPoolExecutor` can pickle them; the engine is
keyed by (database_dir, limits, generation, cache_dir), so bumping the generation (clamd
RELOAD, SIGHUP) makes each worker load the database again on its next scan. `preload` loads
it in the pool's fork server before any worker exists (`server.pool_warm`), so workers are
forked with it; a worker whose key differs loads its own on first use.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from mailyard.antivirus.verdict import ScanLimits, ScanOptions, ScanVerdict

if TYPE_CHECKING:
    from mailyard.antivirus.engine import VirusEngine

_engine: VirusEngine | None = None
_key: tuple | None = None
_loaded_in: int | None = None  # the pid that loaded `_engine` (the fork server, if preloaded)


def engine_for(database_dir: str | None, limits: ScanLimits, generation: int = 0,
               cache_dir: str | None = None, cache_after_fork: bool = False) -> VirusEngine:
    global _engine, _key, _loaded_in
    key = (database_dir, limits, generation, cache_dir)
    if _engine is None or _key != key:
        _engine = None  # free the old signatures before loading the new ones
        from mailyard.antivirus.engine import VirusEngine

        _engine = VirusEngine(database_dir, limits, cache_dir=cache_dir,
                              cache_after_fork=cache_after_fork)
        _key = key
        _loaded_in = os.getpid()
    return _engine


def loaded() -> tuple[tuple | None, int | None, int]:
    """(engine key, pid that loaded it, this pid): whether a worker was forked with it."""
    return _key, _loaded_in, os.getpid()


def preload(database_dir: str | None, limits: dict, cache_dir: str | None = None) -> None:
    """Load the engine in the pool's fork server (`server.pool_warm`), before it forks any
    worker: each worker then starts with it, shared copy-on-write. The compiled cache is
    written only once the first worker is forked (`VirusEngine(cache_after_fork=True)`)."""
    engine_for(database_dir, ScanLimits(**limits), 0, cache_dir, cache_after_fork=True)


def scan_message(database_dir: str | None, limits: ScanLimits, message: bytes,
                 generation: int = 0, cache_dir: str | None = None) -> ScanVerdict:
    return engine_for(database_dir, limits, generation, cache_dir).scan_message(message)


def scan_bytes(database_dir: str | None, limits: ScanLimits, data: bytes,
               options: ScanOptions | None = None, generation: int = 0,
               cache_dir: str | None = None) -> ScanVerdict:
    return engine_for(database_dir, limits, generation, cache_dir).scan_bytes(data, None, options)


def signature_count(database_dir: str | None, limits: ScanLimits, generation: int = 0,
                    cache_dir: str | None = None) -> int:
    return engine_for(database_dir, limits, generation, cache_dir).signature_count


def scan_file(database_dir: str | None, limits: ScanLimits, path: str,
              options: ScanOptions | None = None, generation: int = 0,
              cache_dir: str | None = None) -> ScanVerdict:
    """Read and scan one file (OSError propagates to the caller)."""
    with open(path, "rb") as f:
        data = f.read()
    return engine_for(database_dir, limits, generation, cache_dir).scan_bytes(data, path, options)
