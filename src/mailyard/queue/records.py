"""Typed records of the queue: one spooled message's state, and delivery replies.

A queue entry is two files in the spool (see `spool`): the message bytes, untouched, and a
small JSON document holding the `Envelope` plus the mutable delivery state defined here —
one `RecipientState` per recipient, so that a recipient delivered once is never attempted
again because another one failed (the per-recipient promise of issue 3).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from mailyard.envelope import Envelope, Recipient

# Recipient status values.
PENDING = "pending"        # still to be delivered (or retried)
DELIVERED = "delivered"    # a 2xx from the next hop
FAILED = "failed"          # a 5xx or expired: bounced (or not, for the null sender)
EXPANDED = "expanded"      # a local alias replaced by its targets (children follow it)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply as the next hop gave it (or as we made it up for a local error)."""

    code: int
    text: str = ""
    enhanced: str = ""          # "5.1.1", when the reply had an enhanced status code
    remote: str = ""            # the host that answered ("" = our own verdict)

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def success(self) -> bool:
        return 200 <= self.code < 300

    def status(self) -> str:
        """The RFC 3463 status code for a DSN: the remote's, or derived from the class."""
        if self.enhanced:
            return self.enhanced
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")

    def line(self) -> str:
        parts = [str(self.code)]
        if self.enhanced:
            parts.append(self.enhanced)
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


@dataclass
class RecipientState:
    """Where one recipient stands. Mutable: the scheduler updates it, then persists."""

    address: str
    orcpt: str | None = None
    notify: tuple[str, ...] = ()
    status: str = PENDING
    reply: Reply | None = None           # the last reply that decided or deferred it
    attempts: int = 0
    parent: str | None = None            # the alias this recipient was expanded from
    final: bool = False                  # already resolved: do not expand again

    def wants(self, kind: str) -> bool:
        """RFC 3461 §4.1: does NOTIFY ask for a DSN of `kind` (SUCCESS, FAILURE, DELAY)?

        Absent NOTIFY means FAILURE and DELAY (the server's choice the RFC allows).
        """
        if not self.notify:
            return kind in ("FAILURE", "DELAY")
        if "NEVER" in self.notify:
            return False
        return kind in self.notify


@dataclass
class QueueEntry:
    """The state of one spooled message (its bytes live in the spool beside it)."""

    queue_id: str
    envelope: Envelope
    recipients: list[RecipientState]
    created: float                       # unix time of commit
    stage: str = "final"                 # "filter" (to be scanned) or "final" (to deliver)
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    delay_warned: bool = False
    size: int = 0
    held: bool = field(default=False, compare=False)   # mirrors the hold marker, not persisted

    def pending(self) -> list[RecipientState]:
        return [r for r in self.recipients if r.status == PENDING]

    # -- (de)serialisation -----------------------------------------------------------
    def to_json(self) -> bytes:
        env = _envelope_dict(self.envelope)
        doc = {
            "version": FORMAT_VERSION,
            "queue_id": self.queue_id,
            "envelope": env,
            "recipients": [_rcpt_to_dict(r) for r in self.recipients],
            "created": self.created,
            "stage": self.stage,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "last_error": self.last_error,
            "delay_warned": self.delay_warned,
            "size": self.size,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> QueueEntry:
        doc = json.loads(data)
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"unknown queue file version {doc.get('version')!r}")
        env = dict(doc["envelope"])
        env["recipients"] = tuple(
            Recipient(address=r["address"], orcpt=r.get("orcpt"),
                      notify=tuple(r.get("notify") or ()))
            for r in env.get("recipients", ()))
        known = {f.name for f in dataclasses.fields(Envelope)}
        envelope = Envelope(**{k: v for k, v in env.items() if k in known})
        return cls(
            queue_id=doc["queue_id"], envelope=envelope,
            recipients=[_rcpt_from_dict(r) for r in doc["recipients"]],
            created=doc["created"], stage=doc.get("stage", "final"),
            attempts=doc.get("attempts", 0), next_attempt=doc.get("next_attempt", 0.0),
            last_error=doc.get("last_error", ""), delay_warned=doc.get("delay_warned", False),
            size=doc.get("size", 0))

    def summary(self) -> dict:
        """What `mailyard queue list/show --json` prints for this entry."""
        return {
            "queue_id": self.queue_id,
            "sender": self.envelope.sender,
            "received_via": self.envelope.received_via,
            "stage": self.stage,
            "size": self.size,
            "created": self.created,
            "attempts": self.attempts,
            "next_attempt": self.next_attempt,
            "held": self.held,
            "last_error": self.last_error,
            "recipients": [
                {"address": r.address, "status": r.status,
                 "reply": r.reply.line() if r.reply else None, "attempts": r.attempts,
                 **({"parent": r.parent} if r.parent else {})}
                for r in self.recipients],
        }


def new_entry(queue_id: str, envelope: Envelope, created: float, stage: str,
              size: int) -> QueueEntry:
    recipients, seen = [], set()
    for r in envelope.recipients:
        if r.address.lower() in seen:       # RCPT TO given twice: deliver once
            continue
        seen.add(r.address.lower())
        recipients.append(RecipientState(address=r.address, orcpt=r.orcpt,
                                         notify=tuple(r.notify)))
    return QueueEntry(queue_id=queue_id, envelope=envelope, created=created, stage=stage,
                      size=size, next_attempt=created, recipients=recipients)


_ENVELOPE_FIELDS = tuple(f.name for f in dataclasses.fields(Envelope))


def _envelope_dict(envelope: Envelope) -> dict:
    """`dataclasses.asdict(envelope)`, without its generic deep copy (a tenth of a commit's
    event-loop time in a profile): the same JSON."""
    doc = {name: getattr(envelope, name) for name in _ENVELOPE_FIELDS}
    doc["recipients"] = [{"address": r.address, "orcpt": r.orcpt, "notify": list(r.notify)}
                         for r in envelope.recipients]
    doc["extra"] = dict(envelope.extra)
    return doc


def _rcpt_to_dict(r: RecipientState) -> dict:
    d = {"address": r.address, "status": r.status, "attempts": r.attempts}
    if r.orcpt:
        d["orcpt"] = r.orcpt
    if r.notify:
        d["notify"] = list(r.notify)
    if r.reply is not None:
        d["reply"] = dataclasses.asdict(r.reply)
    if r.parent:
        d["parent"] = r.parent
    if r.final:
        d["final"] = True
    return d


def _rcpt_from_dict(d: dict) -> RecipientState:
    reply = d.get("reply")
    return RecipientState(
        address=d["address"], orcpt=d.get("orcpt"), notify=tuple(d.get("notify") or ()),
        status=d.get("status", PENDING), reply=Reply(**reply) if reply else None,
        attempts=d.get("attempts", 0), parent=d.get("parent"), final=d.get("final", False))
