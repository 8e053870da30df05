"""Typed records the virus engine hands out: limits in, verdicts and attachments out."""

from __future__ import annotations

from dataclasses import dataclass, field

# ClamAV's heuristic names for a scan cut short by a limit (its "AlertExceedsMax" names),
# so logs and clamd replies read the same as ClamAV's.
LIMIT_RECURSION = "Heuristics.Limits.Exceeded.MaxRecursion"
LIMIT_FILES = "Heuristics.Limits.Exceeded.MaxFiles"
LIMIT_SCAN_SIZE = "Heuristics.Limits.Exceeded.MaxScanSize"
LIMIT_FILE_SIZE = "Heuristics.Limits.Exceeded.MaxFileSize"
LIMIT_SCAN_TIME = "Heuristics.Limits.Exceeded.MaxScanTime"
# ClamAV has no ratio limit; this name follows its pattern.
LIMIT_RATIO = "Heuristics.Limits.Exceeded.MaxCompressionRatio"


@dataclass(frozen=True)
class ScanLimits:
    """Bounds that keep one scan finite, whatever the input (bombs, quines, huge mail).

    `max_depth`: nesting of containers (MIME parts, archives, compressed streams);
    `max_total_bytes`: all bytes produced by decoding/unpacking together; `max_file_size`:
    one unpacked member; `max_files`: members taken from one archive; `max_ratio`: unpacked
    size / packed size of one member; `max_scan_time`: seconds for the whole scan.
    `alert_exceeded`: a hit limit makes the verdict infected (policy "block").
    """

    max_depth: int = 16
    max_total_bytes: int = 200 * 1024 * 1024
    max_file_size: int = 100 * 1024 * 1024
    max_files: int = 10000
    max_ratio: float = 250.0
    max_scan_time: float = 120.0
    alert_exceeded: bool = True


@dataclass(frozen=True)
class ScanOptions:
    """clamscan's switches, per scan: --allmatch, --scan-archive, --scan-mail."""

    allmatch: bool = False
    scan_archives: bool = True
    scan_mail: bool = True


@dataclass(frozen=True)
class Attachment:
    """One file seen during a scan: a MIME part or an archive member.

    `detected_type` comes from the content (magic bytes: "zip", "pe", "pdf", ...), not from
    the name or the declared type, so policy can catch `invoice.pdf` that is really a `pe`.
    `depth` is 1 for a top-level MIME part and grows by one per container.
    """

    name: str
    content_type: str
    detected_type: str
    depth: int
    size: int = 0
    encrypted: bool = False


@dataclass(frozen=True)
class ScanVerdict:
    """What the engine concluded about one message or file.

    `names`: signatures that matched, spelled as ClamAV reports them (an unsigned database's
    names get ClamAV's ".UNOFFICIAL" suffix). `limits_exceeded`: the first limit hit, a
    `Heuristics.Limits.Exceeded.*` name, else None. `encrypted`: an encrypted archive member
    could not be looked into.
    """

    infected: bool
    names: tuple[str, ...] = ()
    limits_exceeded: str | None = None
    encrypted: bool = False
    attachments: tuple[Attachment, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str | None:
        """The first name (what clamscan prints), or None when clean."""
        return self.names[0] if self.names else None


CLEAN = ScanVerdict(infected=False)
