"""Child process for the crash tests: receives messages into a queue, prints what it
committed, and waits to be killed with SIGKILL.

    python crash_child.py CONFIG committed   # commit messages concurrently, forever
    python crash_child.py CONFIG mid-data    # start a message and stop half-way through
"""

from __future__ import annotations

import asyncio
import sys

from mailyard.config import load
from mailyard.envelope import Envelope, Recipient
from mailyard.queue import Queue
from mailyard.queue.incoming import FLUSH_AT
from mailyard.server.app import App

ENVELOPE = Envelope(sender="sender@example.net", recipients=(Recipient("a@example.test"),),
                    received_via="smtp")


async def main(config: str, mode: str) -> None:
    app = App(load(config))
    queue = app.component("queue", Queue)
    if mode == "mid-data":
        incoming = await queue.receive(ENVELOPE)
        incoming.write(b"Subject: torn\r\n\r\n")
        # More than Incoming buffers in memory: the start of the body is in the file.
        for _ in range(FLUSH_AT // 1000 + 10):
            incoming.write(b"x" * 998 + b"\r\n")
        incoming.write(b"half of the bo")
        print("WRITING", incoming.queue_id, flush=True)
        await asyncio.sleep(3600)
        return

    async def sender(n: int) -> None:
        i = 0
        while True:
            i += 1
            incoming = await queue.receive(ENVELOPE)
            incoming.write(b"Subject: crash %d-%d\r\n\r\nbody\r\n" % (n, i))
            queue_id = await incoming.commit()
            # Printed only after commit returned: the moment a client would get its 250.
            print("COMMITTED", queue_id, flush=True)

    await asyncio.gather(*(sender(n) for n in range(8)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
