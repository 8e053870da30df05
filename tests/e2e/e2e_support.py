"""The whole pipeline in one real server: smtp → queue → filter → reinject → LMTP → Maildir."""

from __future__ import annotations

import email
import time
from email import policy
from pathlib import Path

import pytest

PIPELINE = {"smtp", "submission", "filter", "reinject", "lmtp"}
FAST_QUEUE = "[queue]\nretry_initial = 1.0\nretry_max = 2.0\ncontrol_poll = 0.2\n"


def maildir_messages(maildir: Path) -> list[tuple[str, Path, email.message.EmailMessage]]:
    """(folder, path, parsed) for every message of every folder of a Maildir."""
    out = []
    if not maildir.is_dir():
        return out
    folders = [("INBOX", maildir)] + [(p.name[1:], p) for p in sorted(maildir.iterdir())
                                      if p.is_dir() and p.name.startswith(".")]
    for name, path in folders:
        for sub in ("new", "cur"):
            d = path / sub
            if d.is_dir():
                for f in sorted(d.iterdir()):
                    msg = email.message_from_bytes(f.read_bytes(), policy=policy.default)
                    out.append((name, f, msg))
    return out


def wait_for_messages(maildir: Path, count: int, timeout: float = 60.0, srv=None):
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        found = maildir_messages(maildir)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    log = srv.log_text()[-6000:] if srv is not None else ""
    raise AssertionError(f"expected {count} message(s) in {maildir}, found {len(found)}\n{log}")


@pytest.fixture
def pipeline(mailyard_server):
    def start(toml: str = "", **kwargs):
        srv = mailyard_server(services=PIPELINE, domains=["example.test"],
                              toml=FAST_QUEUE + toml, **kwargs)
        srv.add_user("alice@example.test", "secret")
        srv.add_user("bob@example.test", "secret")
        return srv

    return start
