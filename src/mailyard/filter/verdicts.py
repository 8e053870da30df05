"""What one scan found, as plain picklable records (they cross the process-pool boundary)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RuleHit:
    name: str
    score: float
    description: str = ""


@dataclass(frozen=True)
class AttachmentSeen:
    name: str
    content_type: str
    detected_type: str = ""
    depth: int = 0


@dataclass(frozen=True)
class ScanResult:
    """Both engines' verdicts on one message."""

    infected: bool = False
    virus_names: tuple[str, ...] = ()
    limits_exceeded: str | None = None
    encrypted: bool = False
    attachments: tuple[AttachmentSeen, ...] = ()
    spam_checked: bool = False
    score: float = 0.0
    hits: tuple[RuleHit, ...] = ()
    bayes_probability: float | None = None
    autolearn: str = "no"
    subject: str = ""
    error: str | None = None       # an engine failed: the message is deferred, never lost


@dataclass(frozen=True)
class Decision:
    """What happens to the message for one recipient."""

    recipient: str
    action: str                     # "deliver" or "quarantine"
    reason: str = ""                # "virus", "banned", "spam" when quarantined
    detail: str = ""
    spam_flag: bool = False
    add_spam_headers: bool = True
    tag_subject: bool = False
    spam_level: float = 5.0

    @property
    def variant(self) -> tuple:
        """Recipients with the same variant get byte-identical copies in one transaction."""
        return (self.action, self.spam_flag, self.add_spam_headers, self.tag_subject,
                self.spam_level)
