"""Learn jobs dropped by other stages (IMAP moves into or out of Junk).

Format: one JSON file per job in `DATA_DIR/spam-learn/`, named anything ending in `.json`
(write it as `NAME.json.tmp`, then rename, so a reader never sees half a job):

    {"user": "alice@example.test", "verdict": "spam", "path": "/abs/path/to/message"}

`user` may be null (site-wide Bayes); `verdict` is "spam", "ham" or "forget"; `path` is a
message file readable by the server (an absolute path, or relative to DATA_DIR). Optionally
`"message": "<the message, base64>"` instead of `path`.

`process_learn_jobs(engine, data_dir)` learns every job and deletes its file. It is
idempotent: a job processed twice (a crash between learning and deleting) changes nothing the
second time, because learning the same message the same way twice is a no-op. A job that
cannot be read or parsed is moved to `spam-learn/failed/` so it is not retried forever.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.log import event, get_logger

log = get_logger("spam")
JOB_DIR = "spam-learn"


@dataclass
class LearnJobReport:
    """What one pass over the job directory did."""

    learned: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def write_learn_job(data_dir: str | Path, user: str | None, verdict: str, path: str) -> Path:
    """Drop a learn job (the format above); returns the job file's path."""
    directory = Path(data_dir) / JOB_DIR
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{os.urandom(6).hex()}.json"
    tmp = directory / (name + ".tmp")
    tmp.write_text(json.dumps({"user": user, "verdict": verdict, "path": str(path)}))
    os.replace(tmp, directory / name)
    return directory / name


def process_learn_jobs(engine, data_dir: str | Path, limit: int = 1000) -> LearnJobReport:
    report = LearnJobReport()
    directory = Path(data_dir) / JOB_DIR
    if not directory.is_dir():
        return report
    jobs = sorted(directory.glob("*.json"))[:limit]
    for job in jobs:
        try:
            spec = json.loads(job.read_text())
            verdict = spec["verdict"]
            if verdict not in ("spam", "ham", "forget"):
                raise ValueError(f"bad verdict {verdict!r}")
            if "message" in spec:
                message = base64.b64decode(spec["message"])
            else:
                path = Path(spec["path"])
                if not path.is_absolute():
                    path = Path(data_dir) / path
                message = path.read_bytes()
            changed = engine.learn(message, verdict == "spam", user=spec.get("user"),
                                   forget=verdict == "forget")
        except FileNotFoundError as exc:
            if not job.exists():
                continue  # another worker took it
            _fail(job, report, str(exc))
            continue
        except (ValueError, KeyError, TypeError, OSError) as exc:
            _fail(job, report, str(exc))
            continue
        if changed:
            report.learned += 1
        else:
            report.unchanged += 1
        try:
            job.unlink()
        except FileNotFoundError:
            pass
    if report.learned and hasattr(engine, "stores"):
        for store in engine.stores():
            store.maybe_expire()
    if jobs:
        event(log, "learn jobs", learned=report.learned, unchanged=report.unchanged,
              failed=report.failed)
    return report


def _fail(job: Path, report: LearnJobReport, reason: str) -> None:
    report.failed += 1
    report.errors.append(f"{job.name}: {reason}")
    failed = job.parent / "failed"
    failed.mkdir(exist_ok=True)
    try:
        os.replace(job, failed / job.name)
    except OSError:
        pass
