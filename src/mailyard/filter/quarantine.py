"""The quarantine: messages the filter kept out of mailboxes, with why.

Layout under data_dir/quarantine/: `ID.eml` (the message as received by the filter) and
`ID.json` (envelope, reason, verdicts, time). The JSON is written last, atomically, so an
entry without it is a torn write and is ignored. Only the filter and the `mailyard
quarantine` command touch this directory.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mailyard.envelope import Envelope, Recipient


@dataclass(frozen=True)
class QuarantineEntry:
    id: str
    reason: str                    # "virus", "spam", "banned"
    detail: str                    # e.g. "Eicar-Test-Signature" or "score=25.1"
    sender: str
    recipients: tuple[str, ...]
    size: int
    time: float
    subject: str = ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Quarantine:
    """Store, list, read and remove quarantined messages."""

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir) / "quarantine"

    def _ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, message: bytes, envelope: Envelope, reason: str, detail: str,
            subject: str = "") -> QuarantineEntry:
        self._ensure()
        qid = time.strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(4)
        entry = QuarantineEntry(qid, reason, detail, envelope.sender,
                                tuple(envelope.recipient_addresses), len(message), time.time(),
                                subject)
        eml = self.root / f"{qid}.eml"
        with open(eml, "wb") as fh:
            fh.write(message)
            fh.flush()
            os.fsync(fh.fileno())
        meta = {"entry": asdict(entry), "envelope": _envelope_to_json(envelope)}
        tmp = self.root / f".{qid}.json.tmp"
        with open(tmp, "w") as fh:
            json.dump(meta, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / f"{qid}.json")
        _fsync_dir(self.root)
        return entry

    def list(self) -> list[QuarantineEntry]:
        if not self.root.is_dir():
            return []
        out = []
        for meta in sorted(self.root.glob("*.json")):
            try:
                out.append(self._load(meta)[0])
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def _load(self, meta_path: Path) -> tuple[QuarantineEntry, Envelope]:
        data = json.loads(meta_path.read_text())
        e = data["entry"]
        e["recipients"] = tuple(e["recipients"])
        return QuarantineEntry(**e), _envelope_from_json(data["envelope"])

    def _paths(self, qid: str) -> tuple[Path, Path]:
        if not qid or "/" in qid or qid.startswith("."):
            raise KeyError(qid)
        meta, eml = self.root / f"{qid}.json", self.root / f"{qid}.eml"
        if not meta.is_file() or not eml.is_file():
            raise KeyError(qid)
        return meta, eml

    def get(self, qid: str) -> tuple[QuarantineEntry, Envelope, bytes]:
        meta, eml = self._paths(qid)
        entry, envelope = self._load(meta)
        return entry, envelope, eml.read_bytes()

    def delete(self, qid: str) -> None:
        meta, eml = self._paths(qid)
        meta.unlink()
        eml.unlink()


def _envelope_to_json(env: Envelope) -> dict:
    d = asdict(env)
    d["recipients"] = [asdict(r) for r in env.recipients]
    return d


def _envelope_from_json(d: dict) -> Envelope:
    d = dict(d)
    d["recipients"] = tuple(Recipient(r["address"], r.get("orcpt"), tuple(r.get("notify", ())))
                            for r in d["recipients"])
    return Envelope(**d)
