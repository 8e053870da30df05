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
        return
    parts = [message] + [f"{k}={_fmt(v)}" for k, v in fields.items() if v is not None]
    logger.log(level, " ".join(parts))
