"""Queue test fixtures: a queue on a temp data dir, and real aiosmtpd peers on loopback.

The peers are real SMTP/LMTP servers (aiosmtpd) that record what they receive and answer
what the test scripts: 250, 4xx-then-250, 5xx for chosen recipients.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from harness import free_port

from mailyard.config import load
from mailyard.dns import StaticResolver
from mailyard.server.app import App

HOSTNAME = "mx.example.test"


class Recorder:
    """An aiosmtpd handler that records each transaction and answers as scripted.

    `data_replies`: replies for successive DATA commands (consumed; then 250).
    `rcpt_replies`: {address: reply} to refuse chosen recipients at RCPT.
    `lmtp_replies`: {address: [replies...]} per-recipient replies after DATA (LMTP only;
    consumed per transaction, then 250).
    """

    def __init__(self, data_replies=(), rcpt_replies=None, lmtp_replies=None):
        self.data_replies = list(data_replies)
        self.rcpt_replies = dict(rcpt_replies or {})
        self.lmtp_replies = {k: list(v) for k, v in (lmtp_replies or {}).items()}
        self.messages: list[dict] = []
        self.transactions = 0
        self.ehlos = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.ehlos += 1                 # one per connection (and one more after STARTTLS)
        session.host_name = hostname
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.append(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.transactions += 1
        if isinstance(server, LMTP):
            lines, delivered = [], []
            for rcpt in envelope.rcpt_tos:
                script = self.lmtp_replies.get(rcpt)
                reply = script.pop(0) if script else "250 2.0.0 delivered"
                lines.append(reply)
                if reply.startswith("2"):
                    delivered.append(rcpt)
            if delivered:
                self._record(envelope, delivered)
            # aiosmtpd pushes the string as is: one line per recipient (RFC 2033 §4.2).
            return "\r\n".join(lines)
        reply = self.data_replies.pop(0) if self.data_replies else "250 2.0.0 OK queued"
        if reply.startswith("2"):
            self._record(envelope, list(envelope.rcpt_tos))
        return reply

    def _record(self, envelope, recipients):
        self.messages.append({"sender": "" if envelope.mail_from == "<>" else envelope.mail_from,
                              "recipients": recipients,
                              "content": envelope.original_content,
                              "mail_options": list(envelope.mail_options)})

    def to(self, address: str) -> list[dict]:
        return [m for m in self.messages if address in m["recipients"]]


class _LMTPController(Controller):
    def factory(self):
        return LMTP(self.handler, enable_SMTPUTF8=True)


class Peer:
    """A running aiosmtpd server on HOST:PORT."""

    def __init__(self, handler: Recorder, host: str, port: int, lmtp: bool = False):
        self.handler = handler
        self.host, self.port = host, port
        cls = _LMTPController if lmtp else Controller
        self.controller = cls(handler, hostname=host, port=port)
        self.controller.start()
        self.stopped = False

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> None:
        if not self.stopped:                     # idempotent: tests may stop it early
            self.stopped = True
            self.controller.stop()


@pytest.fixture
def peers():
    """Factory: `peers(Recorder(...), lmtp=False, host="127.0.0.1", port=None)`."""
    started: list[Peer] = []

    def start(handler: Recorder | None = None, *, lmtp: bool = False, host="127.0.0.1",
              port: int | None = None) -> Peer:
        peer = Peer(handler or Recorder(), host, port or free_port(host), lmtp=lmtp)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()


def write_config(root: Path, *, filter_hop: str = "", lmtp: str = "", toml: str = "",
                 outbound_port: int = 25, domains=("example.test",)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    # An address nothing listens on stands for "no filter"/"no LMTP" unless given.
    dead = f"127.0.0.1:{free_port()}"
    cfg = root / "mailyard.toml"
    # `toml` holds `key = value` lines for [queue]; they override the test defaults.
    queue = {"retry_initial": "0.2", "retry_max": "0.4", "connect_timeout": "5",
             "command_timeout": "10", "control_poll": "0.1",
             "outbound_port": str(outbound_port)}
    for line in toml.splitlines():
        if "=" in line:
            key, _, value = line.partition("=")
            queue[key.strip()] = value.strip()
    queue_table = "\n".join(f"{k} = {v}" for k, v in queue.items())
    cfg.write_text(f"""
[server]
hostname = "{HOSTNAME}"
data_dir = "{root / 'data'}"
domains = [{", ".join(f'"{d}"' for d in domains)}]

[listen]
lmtp = "{lmtp or dead}"

[filter]
next_hop = "{filter_hop or dead}"

[queue]
{queue_table}
""")
    return cfg


@pytest.fixture
async def make_queue(tmp_path):
    """Factory: `make_queue(filter_hop=..., lmtp=..., dns={...}, toml=...)` → (app, queue)."""
    apps: list[App] = []

    def make(*, filter_hop: str = "", lmtp: str = "", dns: dict | None = None,
             toml: str = "", outbound_port: int = 25, users=(), name: str = "q"):
        from mailyard.queue import Queue

        cfg = write_config(tmp_path / name, filter_hop=filter_hop, lmtp=lmtp, toml=toml,
                           outbound_port=outbound_port)
        app = App(load(str(cfg)))
        resolver = StaticResolver(dns or {})
        app.component("dns", lambda _app: resolver)
        for user in users:
            app.accounts.add_user(user, "pw-not-used")
        queue = app.component("queue", lambda a: Queue(a))
        apps.append(app)
        return app, queue

    yield make
    for app in apps:
        await app.stop()


async def eventually(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    """Wait until `predicate()` is true (never a timing assertion: the timeout is a hang
    guard far above any expected duration)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
