"""The virus engine's settings, read from the config: limits, cache place, version.

Kept apart from `engine` so the clamd listener's process (which only moves bytes; scans
run in the pool) does not import the engine, numpy and YARA-X to know them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mailyard.antivirus.verdict import ScanLimits

ENGINE_VERSION = "mailyard-av 0.2"


def cache_dir_for(settings) -> Path:
    """Where compiled signatures are cached: under data_dir."""
    return settings.data_path / "antivirus-cache"


def limits_from_settings(settings) -> ScanLimits:
    av = settings.antivirus
    return ScanLimits(max_depth=av.max_depth, max_total_bytes=av.max_total_bytes,
                      max_file_size=av.max_file_size, max_files=av.max_files,
                      max_ratio=av.max_ratio, max_scan_time=av.max_scan_time,
                      alert_exceeded=av.on_limits == "block")


class EngineGeneration:
    """Which load of the database the built-in engine's users want: bumped by SIGHUP and by
    clamd RELOAD; a pool worker whose engine is older loads the database again before its
    next scan (`worker.engine_for`). One per App (`app.component("antivirus.generation",
    EngineGeneration)`), shared by the content filter and the clamd listener, so each
    worker keeps one engine for both, and a RELOAD reaches the filter's scans too."""

    def __init__(self, app):
        self.value = 0
        app.on_reload(lambda settings: self.bump())

    def bump(self) -> None:
        self.value += 1


def pool_preload(settings) -> list[tuple[str, list]]:
    """The built-in engine's preload job for the pool's fork server (`server.pool`,
    `server.pool_warm`), for the clamd listener: load the engine with the very key its scans
    ask `worker.engine_for` for, so every worker is forked with it (shared copy-on-write)
    and none loads the database again."""
    return [("mailyard.antivirus.worker:preload",
             [settings.antivirus.databases or None,
              dataclasses.asdict(limits_from_settings(settings)),
              str(cache_dir_for(settings))])]


def filter_pool_preload(settings) -> list[tuple[str, list]]:
    """The content filter's: the same job (one engine serves both), unless the filter
    delegates scanning to a clamd socket (`[antivirus] backend`)."""
    return pool_preload(settings) if uses_builtin(settings) else []


def uses_builtin(settings) -> bool:
    """Whether the content filter scans with the built-in engine."""
    return settings.antivirus.backend in ("", "builtin")
