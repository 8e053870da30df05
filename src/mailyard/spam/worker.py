"""Scanning in a process pool: one engine per worker process, built on first use.

    verdict = await loop.run_in_executor(app.process_pool, scan_bytes, settings, message,
                                         user, facts)

The engine is never pickled; each worker builds its own from the (picklable) settings and
keeps it while the settings stay the same.
"""

from __future__ import annotations

_engine = None
_engine_settings = None


def engine_for(settings):
    global _engine, _engine_settings
    if _engine is None or _engine_settings != settings:
        from mailyard.spam.engine import SpamEngine

        if _engine is not None:
            _engine.close()
        _engine = SpamEngine.from_settings(settings)
        _engine_settings = settings
    return _engine


def scan_bytes(settings, message: bytes, user: str | None = None, facts: dict | None = None):
    """Scan one message in this worker process; returns a SpamVerdict."""
    return engine_for(settings).scan(message, user=user, facts=facts)


def warm_up(settings) -> int:
    """Build this worker's engine now (so the first message does not wait for rule loading)."""
    return len(engine_for(settings).ruleset.rules)
