"""Queue commit throughput: durable commits per second, with and without group commit.

Each commit writes a 4 KB message and its envelope into the spool (one queue file) and
returns only once the file and its directory entry are fsynced (what the 250 waits for). C concurrent
writers (like C SMTP sessions) commit N messages in total; the scheduler is kept idle (the
scheduler is paused), so only the commit path is measured.

    python bench/bench_queue.py                  # N=2000 C=10, spool in a temp dir
    N=5000 C=50 python bench/bench_queue.py
    SPOOL_DIR=/var/tmp python bench/bench_queue.py   # measure on another filesystem
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from mailyard.config import load
from mailyard.envelope import Envelope, Recipient
from mailyard.queue import Queue
from mailyard.server.app import App

N = int(os.environ.get("N", "2000"))
C = int(os.environ.get("C", "10"))
MESSAGE = (b"From: a@example.net\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n"
           + (b"x" * 76 + b"\r\n") * 51)        # about 4 KB
ENVELOPE = Envelope(sender="a@example.net", recipients=(Recipient("b@example.test"),),
                    received_via="smtp")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run(root: Path, group_commit: bool) -> tuple[float, int, int, int]:
    cfg = root / "mailyard.toml"
    cfg.write_text(f"""
[server]
data_dir = "{root / 'data'}"
[filter]
next_hop = "127.0.0.1:{closed_port()}"
[queue]
group_commit = {"true" if group_commit else "false"}
retry_initial = 3600
retry_max = 3600
""")
    app = App(load(str(cfg)))
    queue = app.component("queue", Queue)
    await queue.start()
    queue._stopping = True        # scheduler paused: measure the commit path alone
    per_writer = N // C

    async def writer() -> None:
        for _ in range(per_writer):
            incoming = await queue.receive(ENVELOPE)
            incoming.write(MESSAGE)
            await incoming.commit()

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(C)))
    elapsed = time.perf_counter() - start
    jobs, batches = queue.committer.jobs, queue.committer.batches
    direct = getattr(queue.committer, "direct", 0)
    await app.stop()
    return per_writer * C / elapsed, jobs, batches, direct


def main() -> None:
    base = os.environ.get("SPOOL_DIR") or None
    print(f"queue commit: N={N} messages of {len(MESSAGE)} bytes, C={C} concurrent writers")
    for group in (True, False):
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            rate, jobs, batches, direct = asyncio.run(run(Path(tmp), group))
        label = "group commit   " if group else "fsync each     "
        print(f"  {label} {rate:8.0f} commits/s   ({jobs} commit jobs: {direct} straight to "
              f"the fsync pool, the others in {batches} batches)")


if __name__ == "__main__":
    main()
