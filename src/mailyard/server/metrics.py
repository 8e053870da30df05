"""A Prometheus-style metrics listener (`[listen] metrics`, off by default).

`GET /metrics` answers the text exposition format (version 0.0.4): process facts, open
connections per listener, queue and quarantine sizes, and one counter per structured log
event (`mailyard_events_total{logger=...,event=...}`) — every `log.event()` line counts, so
the numbers match what the log says. Anything else gets 404; the listener speaks just enough
HTTP/1.1 for Prometheus, curl and wget, one request per connection.
"""

from __future__ import annotations

import asyncio
import os
import time

from mailyard import __version__
from mailyard.log import COUNTER, enable_counting
from mailyard.server.listen import Listener, serve_stream

MAX_REQUEST = 8192
_started = time.time()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(app) -> str:
    lines = [
        "# HELP mailyard_info mailyard version.", "# TYPE mailyard_info gauge",
        f'mailyard_info{{version="{__version__}"}} 1',
        "# HELP mailyard_start_time_seconds Unix time the process started.",
        "# TYPE mailyard_start_time_seconds gauge",
        f"mailyard_start_time_seconds {_started:.3f}",
        "# HELP mailyard_connections Open connections per listener.",
        "# TYPE mailyard_connections gauge",
    ]
    for listener in app.listeners:
        lines.append(f'mailyard_connections{{service="{listener.service}"}} '
                     f"{len(listener.connections)}")
    queue_dir = app.data_path / "queue" / "active"
    if queue_dir.is_dir():
        entries = sum(1 for p in os.scandir(queue_dir) if p.name.endswith(".env"))
        lines += ["# HELP mailyard_queue_messages Messages in the queue.",
                  "# TYPE mailyard_queue_messages gauge", f"mailyard_queue_messages {entries}"]
    quarantine = app.data_path / "quarantine"
    if quarantine.is_dir():
        count = sum(1 for p in os.scandir(quarantine) if p.name.endswith(".json"))
        lines += ["# HELP mailyard_quarantine_messages Messages in quarantine.",
                  "# TYPE mailyard_quarantine_messages gauge",
                  f"mailyard_quarantine_messages {count}"]
    lines += ["# HELP mailyard_events_total Structured log events since start.",
              "# TYPE mailyard_events_total counter"]
    for (logger_name, name), value in sorted(COUNTER.counts.items()):
        lines.append(f'mailyard_events_total{{logger="{_escape(logger_name)}",'
                     f'event="{_escape(name)}"}} {value}')
    return "\n".join(lines) + "\n"


async def start(app, service: str, address: str) -> Listener:
    enable_counting()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        if len(head) > MAX_REQUEST:
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
            status, body, ctype = "405 Method Not Allowed", "GET /metrics\n", "text/plain"
        elif parts[1].split("?", 1)[0] != "/metrics":
            status, body, ctype = "404 Not Found", "try /metrics\n", "text/plain"
        else:
            status, body = "200 OK", render(app)
            ctype = "text/plain; version=0.0.4; charset=utf-8"
        payload = body.encode()
        writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode())
        if parts and parts[0] != "HEAD":
            writer.write(payload)
        await writer.drain()

    return await serve_stream(app, service, address, handle)
