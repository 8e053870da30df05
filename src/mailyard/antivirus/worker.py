"""Scanning from a process pool: one `VirusEngine` per worker process, loaded on first use.

The functions here are module-level so `ProcessPoolExecutor` can pickle them; the engine is
keyed by (database_dir, limits, generation), so bumping the generation (clamd RELOAD, SIGHUP)
makes each worker load the database again on its next scan.
"""

from __future__ import annotations

from mailyard.antivirus.engine import ScanOptions, VirusEngine
from mailyard.antivirus.verdict import ScanLimits, ScanVerdict

_engine: VirusEngine | None = None
_key: tuple | None = None


def engine_for(database_dir: str | None, limits: ScanLimits, generation: int = 0,
               cache_dir: str | None = None) -> VirusEngine:
    global _engine, _key
    key = (database_dir, limits, generation, cache_dir)
    if _engine is None or _key != key:
        _engine = None  # free the old signatures before loading the new ones
        _engine = VirusEngine(database_dir, limits, cache_dir=cache_dir)
        _key = key
    return _engine


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
