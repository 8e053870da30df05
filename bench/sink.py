"""A counting SMTP sink for the benchmarks: the "next hop" or the "remote MX".

It runs in a thread with its own event loop, answers 250 to everything, counts the messages
and notes when the last one arrived.
"""

from __future__ import annotations

import asyncio
import threading
import time

from harness import free_port


class Sink:
    """SMTP sink on HOST: 250 to everything, counts messages and notes the last arrival."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.count = 0
        self.last = 0.0
        ready = threading.Event()

        async def session(reader, writer) -> None:
            writer.write(b"220 sink ESMTP\r\n")
            in_data = False
            while line := await reader.readline():
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        self.count += 1
                        self.last = time.perf_counter()
                        writer.write(b"250 2.0.0 ok\r\n")
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    in_data = True
                    writer.write(b"354 go\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                elif verb in (b"EHLO", b"LHLO"):
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(session, host, self.port, backlog=512)
            ready.set()
            async with server:
                await server.serve_forever()

        threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
        ready.wait(10)

    def wait_for(self, count: int, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            time.sleep(0.05)
