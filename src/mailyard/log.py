"""Structured logging: one line per event, `key=value` pairs after a short message.

    log = get_logger("mta")
    event(log, "session end", client="192.0.2.1", queue_id="Q1", status="250")
"""

from __future__ import annotations

import logging
import sys
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup(level: str = "info") -> None:
    root = logging.getLogger("mailyard")
    root.setLevel(level.upper())
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    root.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"mailyard.{name}")


def _fmt(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n\r\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")\
            .replace("\r", "\\r") + '"'
    return text


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured line: `message key=value ...` (None values are left out)."""
    if not logger.isEnabledFor(level):
        if COUNTER.active:
            COUNTER.count(logger.name, message)
        return
    parts = [message] + [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    logger.log(level, " ".join(parts), extra={"event": message})


class EventCounter(logging.Handler):
    """Counts structured events per (logger, event) for the metrics listener.

    Every `event()` line is a counter sample, so packages need no metrics code of their own:
    `mailyard_events_total{logger="mailyard.mta",event="message accepted"}`.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.counts: dict[tuple[str, str], int] = {}
        self.active = False

    def count(self, logger_name: str, name: str) -> None:
        key = (logger_name, name)
        self.counts[key] = self.counts.get(key, 0) + 1

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "event", None)
        if name is None:
            name = f"level {record.levelname.lower()}"
        self.count(record.name, name)


COUNTER = EventCounter()


def enable_counting() -> None:
    """Attach the event counter to the mailyard logger (done when metrics are on)."""
    if not COUNTER.active:
        COUNTER.active = True
        logging.getLogger("mailyard").addHandler(COUNTER)
