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


def pool_preload(settings) -> list[tuple[str, list]]:
    """The clamd listener's preload job for the pool's fork server (`server.pool`,
    `server.pool_warm`): load the engine with the very key the scans ask `worker.engine_for`
    for, so every worker is forked with it and none loads the database again."""
    return [("mailyard.antivirus.worker:preload",
             [settings.antivirus.databases or None,
              dataclasses.asdict(limits_from_settings(settings)),
              str(cache_dir_for(settings))])]
