"""The virus scanner (the ClamAV stage): a pure engine, `mailyard scan`, a clamd listener.

    engine = VirusEngine.from_settings(settings)        # or VirusEngine(db_dir, ScanLimits())
    verdict = engine.scan_message(raw_message_bytes)    # ScanVerdict
    verdict = engine.scan_bytes(file_bytes, name="x.zip")

For a process pool, `mailyard.antivirus.worker.scan_message(database_dir, limits, message)`
keeps one engine per worker process.
"""

from mailyard.antivirus.engine import EICAR, EICAR_NAME, ScanOptions, VirusEngine
from mailyard.antivirus.verdict import Attachment, ScanLimits, ScanVerdict

__all__ = [
           "EICAR",
           "EICAR_NAME",
           "Attachment",
           "ScanLimits",
           "ScanOptions",
           "ScanVerdict",
           "VirusEngine",
]
