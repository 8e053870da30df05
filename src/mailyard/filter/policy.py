"""Per-recipient filter policy (pure): verdicts + settings → a Decision per recipient.

Order of precedence, first match wins: a virus (or a scan limit hit with the block policy)
→ quarantine; a banned attachment → quarantine; a spam score at or above kill_level →
quarantine; otherwise deliver, flagged as spam at or above spam_level. Bypass lists skip the
spam or banned checks for a recipient (address or @domain). The filter never rejects.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailyard import __version__
from mailyard.filter.verdicts import Decision, ScanResult


@dataclass(frozen=True)
class FilterPolicy:
    tag_level: float = -999.0
    spam_level: float = 5.0
    kill_level: float = 0.0          # 0 = never quarantine spam
    subject_tag: str = "***SPAM*** "
    banned_extensions: frozenset[str] = frozenset()
    bypass_spam: frozenset[str] = frozenset()
    bypass_banned: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings) -> FilterPolicy:
        f = settings.filter
        return cls(tag_level=f.tag_level, spam_level=f.spam_level, kill_level=f.kill_level,
                   subject_tag=f.subject_tag,
                   banned_extensions=frozenset(e.lower().lstrip(".")
                                               for e in f.banned_extensions),
                   bypass_spam=frozenset(a.lower() for a in f.bypass_spam),
                   bypass_banned=frozenset(a.lower() for a in f.bypass_banned))


def _listed(recipient: str, entries: frozenset[str]) -> bool:
    r = recipient.lower()
    return r in entries or ("@" + r.rsplit("@", 1)[-1]) in entries


def banned_attachment(policy: FilterPolicy, result: ScanResult) -> str | None:
    """The first attachment whose name (or detected type) is banned, also inside archives."""
    for att in result.attachments:
        name = att.name.lower().rstrip(". ")
        ext = name.rsplit(".", 1)[-1] if "." in name else ""
        if ext and ext in policy.banned_extensions:
            return att.name
        detected = att.detected_type.lower()
        if detected in ("pe", "exe", "application/x-dosexec", "msexe") and \
                "exe" in policy.banned_extensions:
            return att.name or detected
    return None


def decide(policy: FilterPolicy, result: ScanResult, recipient: str) -> Decision:
    if result.infected:
        names = ", ".join(result.virus_names) or result.limits_exceeded or "virus"
        return Decision(recipient, "quarantine", "virus", names, spam_level=policy.spam_level)
    if not _listed(recipient, policy.bypass_banned):
        banned = banned_attachment(policy, result)
        if banned:
            return Decision(recipient, "quarantine", "banned", banned,
                            spam_level=policy.spam_level)
    if _listed(recipient, policy.bypass_spam) or not result.spam_checked:
        return Decision(recipient, "deliver", add_spam_headers=False,
                        spam_level=policy.spam_level)
    if policy.kill_level > 0 and result.score >= policy.kill_level:
        return Decision(recipient, "quarantine", "spam", f"score={result.score:.1f}",
                        spam_flag=True, spam_level=policy.spam_level)
    is_spam = result.score >= policy.spam_level
    return Decision(recipient, "deliver", spam_flag=is_spam,
                    add_spam_headers=result.score >= policy.tag_level,
                    tag_subject=is_spam and bool(policy.subject_tag),
                    spam_level=policy.spam_level)


def scan_headers(result: ScanResult, decision: Decision) -> list[tuple[str, str]]:
    """The amavis/SpamAssassin-compatible fields for one delivery variant."""
    fields = [("X-Virus-Scanned", f"mailyard {__version__}")]
    if not decision.add_spam_headers:
        return fields
    score = result.score
    tests = ",".join(sorted(h.name for h in result.hits)) or "none"
    flag = "YES" if decision.spam_flag else "NO"
    fields += [
        ("X-Spam-Flag", flag),
        ("X-Spam-Score", f"{score:.1f}"),
        ("X-Spam-Level", "*" * max(0, min(50, int(score)))),
        ("X-Spam-Status", f"{'Yes' if decision.spam_flag else 'No'}, score={score:.1f} "
                          f"required={decision.spam_level:.1f} tests={tests} "
                          f"autolearn={result.autolearn}"),
    ]
    return fields
