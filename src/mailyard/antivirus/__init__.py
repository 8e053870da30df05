"""The virus scanner (the ClamAV stage): a pure engine, `mailyard scan`, a clamd listener.

    engine = VirusEngine.from_settings(settings)   # built-in (or ClamdBackend if configured)
    engine = VirusEngine(db_dir, ScanLimits(), cache_dir=None)
    verdict = engine.scan_message(raw_message_bytes)    # ScanVerdict
    verdict = engine.scan_bytes(file_bytes, name="x.zip", options=ScanOptions(allmatch=True))

`from_settings` caches the compiled signatures under data_dir/antivirus-cache, so each
process-pool worker loads them quickly; `mailyard.antivirus.worker` keeps one engine per
worker process for callers that submit module-level functions to a pool.
"""

from mailyard.antivirus.verdict import Attachment, ScanLimits, ScanOptions, ScanVerdict

__all__ = ["EICAR", "EICAR_NAME", "Attachment", "ScanLimits", "ScanOptions", "ScanVerdict",
           "VirusEngine"]


def __getattr__(name: str):
    # The engine (numpy, YARA-X) loads on first use: the clamd listener's own process only
    # moves bytes and needs none of it (its start-up time is measured, bench/RESULTS.md).
    if name in ("EICAR", "EICAR_NAME", "VirusEngine"):
        from mailyard.antivirus import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
