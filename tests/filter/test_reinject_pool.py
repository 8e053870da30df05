"""The filter's reinjection connections are reused, and a dead one never loses a message."""

from __future__ import annotations

import asyncio
import time

from mailyard.config import load
from mailyard.envelope import Envelope, Recipient
from mailyard.filter.service import ReinjectPool, reinject


def _arrived(srv, address: str) -> int:
    maildir = srv.maildir(address)
    return sum(1 for sub in ("new", "cur") if (maildir / sub).is_dir()
               for _ in (maildir / sub).iterdir())


def _wait_arrived(srv, address: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while _arrived(srv, address) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _arrived(srv, address) == count, srv.log_text()[-3000:]


def test_reinject_reuses_connection_and_survives_server_restart(mailyard_server):
    srv = mailyard_server(services={"reinject", "lmtp"}, domains=["example.test"],
                          toml="[queue]\nretry_initial = 1.0\nretry_max = 2.0\n")
    srv.add_user("alice@example.test", "secret")
    settings = load(str(srv.config_path))
    envelope = Envelope(sender="bob@example.net",
                        recipients=(Recipient("alice@example.test"),), received_via="filter")

    def message(n: int) -> bytes:
        return f"Subject: pooled {n}\r\n\r\nbody {n}\r\n".encode()

    async def main() -> None:
        pool = ReinjectPool()
        await reinject(settings, envelope, message(1), pool)
        first = pool._idle[-1][2]
        await reinject(settings, envelope, message(2), pool)
        assert pool._idle[-1][2] is first            # the same connection, reused
        # The server restarts: the idle connection is dead; the next message still goes.
        await asyncio.to_thread(srv.restart)
        await reinject(settings, envelope, message(3), pool)
        assert pool._idle[-1][2] is not first
        pool.close()

    asyncio.run(main())
    _wait_arrived(srv, "alice@example.test", 3)
    assert srv.log_text().count("service=reinject") >= 3
