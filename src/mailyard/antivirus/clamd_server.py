"""The clamd-compatible listener: `clamd_proto` on a socket, scans in the process pool.

Scans run in `app.process_pool`, so the event loop only moves bytes. The pool's fork server
loads the database once at start-up (`from_config.pool_preload`), so every worker is
forked with the engine; without that (a pool started before this service) a worker loads it
on first use. RELOAD (and SIGHUP) bump a generation number that makes every worker load the database
again before its next scan.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os

from mailyard.antivirus import worker
from mailyard.antivirus.clamd_proto import (
    NEED_DATA,
    SIZE_LIMIT_REPLY,
    UNKNOWN_REPLY,
    ClamdConnection,
    Command,
    ProtocolError,
    SessionEnd,
    StreamComplete,
    StreamTooLong,
    format_result,
)
from mailyard.antivirus.from_config import (
    ENGINE_VERSION,
    EngineGeneration,
    cache_dir_for,
    limits_from_settings,
)
from mailyard.antivirus.verdict import ScanOptions
from mailyard.log import event, get_logger
from mailyard.server.listen import Listener, serve_stream

log = get_logger("antivirus")
MULTISCAN_PARALLEL = max(os.cpu_count() or 2, 2)
COMMAND_LIST = ("SCAN QUIT RELOAD PING CONTSCAN VERSIONCOMMANDS VERSION END SHUTDOWN "
                "MULTISCAN STATS IDSESSION INSTREAM DETSTATSCLEAR DETSTATS ALLMATCHSCAN")


class ClamdService:
    """What every clamd connection of one process shares: settings, generation, stats."""

    def __init__(self, app):
        self.app = app
        # Shared with the content filter: one engine per worker serves both.
        self._generation = app.component("antivirus.generation", EngineGeneration)
        self.loaded_at = datetime.datetime.now(datetime.UTC)
        self.scans = 0
        self.found = 0
        app.on_reload(self._on_reload)

    @property
    def generation(self) -> int:
        return self._generation.value

    def _on_reload(self, settings) -> None:  # SIGHUP: `EngineGeneration` bumps itself
        self.loaded_at = datetime.datetime.now(datetime.UTC)

    def reload(self) -> None:
        """clamd RELOAD: every worker loads the database again before its next scan."""
        self._generation.bump()
        self.loaded_at = datetime.datetime.now(datetime.UTC)

    @property
    def _db(self):
        return self.app.settings.antivirus.databases or None

    @property
    def _limits(self):
        return limits_from_settings(self.app.settings)

    async def _in_pool(self, func, *args):
        loop = asyncio.get_running_loop()
        call = functools.partial(func, self._db, self._limits, *args,
                                 cache_dir=str(cache_dir_for(self.app.settings)))
        return await loop.run_in_executor(self.app.process_pool, call)

    async def scan_stream(self, data: bytes):
        self.scans += 1
        return await self._in_pool(worker.scan_bytes, data, ScanOptions(), self.generation)

    async def scan_path(self, name: str, argument: str) -> list[str]:
        allmatch = name == "ALLMATCHSCAN"
        stop_at_first = name == "SCAN"
        path = argument
        if not os.path.exists(path):
            return [f"{path}: File path check failure: No such file or directory. ERROR"]
        if not (os.path.isdir(path) or os.path.isfile(path)):
            # A FIFO or device would block a worker forever.
            return [f"{path}: Not supported file type. ERROR"]
        files = await asyncio.to_thread(_list_files, path)
        options = ScanOptions(allmatch=allmatch)
        lines: list[str] = []
        semaphore = asyncio.Semaphore(MULTISCAN_PARALLEL if name == "MULTISCAN" else 1)

        async def one(file_path: str) -> list[str]:
            async with semaphore:
                try:
                    verdict = await self._in_pool(worker.scan_file, file_path, options,
                                                  self.generation)
                except OSError as exc:
                    return [f"{file_path}: {exc.strerror or exc}. ERROR"]
                self.scans += 1
                if verdict.infected:
                    self.found += 1
                    return format_result(file_path, verdict.names, allmatch)
                return []

        if name == "MULTISCAN":
            for result in await asyncio.gather(*(one(f) for f in files)):
                lines += result
        else:
            for file_path in files:
                result = await one(file_path)
                lines += result
                if stop_at_first and any(line.endswith(" FOUND") for line in result):
                    break
        return lines or [f"{path}: OK"]

    async def warm(self) -> None:
        """Log when the pool's workers have the database. The pool's fork server loads it
        at start-up (`from_config.pool_preload`), so every worker is forked with it, and
        writes the compiled cache; without that preload the first worker here loads it."""
        started = asyncio.get_running_loop().time()
        await self.app.pool_ready()
        count = await self._in_pool(worker.signature_count, self.generation)
        event(log, "clamd signatures loaded", signatures=count,
              seconds=round(asyncio.get_running_loop().time() - started, 2))

    async def version(self) -> str:
        count = await self._in_pool(worker.signature_count, self.generation)
        stamp = self.loaded_at.strftime("%a %b %d %H:%M:%S %Y")
        return f"ClamAV {ENGINE_VERSION}/{count}/{stamp}"

    # -- one connection -------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        settings = self.app.settings.antivirus
        conn = ClamdConnection(settings.stream_max_length)
        while True:
            ev = conn.next_event()
            if ev is NEED_DATA:
                if conn.closed:
                    return
                data = await reader.read(1 << 16)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(ev, SessionEnd):
                return
            if isinstance(ev, ProtocolError):
                text = UNKNOWN_REPLY if ev.message == UNKNOWN_REPLY else f"{ev.message}. ERROR"
                writer.write(conn.reply(ev, text))
                await writer.drain()
                return
            if isinstance(ev, StreamTooLong):
                writer.write(conn.reply(ev, f"{SIZE_LIMIT_REPLY} ERROR"))
                await writer.drain()
                event(log, "clamd stream refused", reason="StreamMaxLength")
                await _discard_rest(reader)
                return
            try:
                if isinstance(ev, StreamComplete):
                    verdict = await self.scan_stream(ev.data)
                    if verdict.infected:
                        self.found += 1
                    lines = format_result("stream", verdict.names)
                    event(log, "clamd scan", source="stream", size=len(ev.data),
                          result=verdict.name or "OK")
                else:
                    lines = await self.command(ev)
                    if lines is None:  # SHUTDOWN/QUIT: not ours to do; just hang up
                        return
            except Exception as exc:  # an engine bug answers ERROR, not silence
                log.exception("clamd: scan failed")
                label = "stream" if isinstance(ev, StreamComplete) else ev.argument or ev.name
                lines = f"{label}: scan failed ({type(exc).__name__}). ERROR"
            writer.write(conn.reply(ev, lines))
            await writer.drain()
            if not conn.keep_open:
                return

    async def command(self, ev: Command) -> list[str] | str | None:
        name = ev.name
        if name == "PING":
            return "PONG"
        if name == "VERSION":
            return await self.version()
        if name == "VERSIONCOMMANDS":
            return f"{await self.version()}| COMMANDS: {COMMAND_LIST}"
        if name == "RELOAD":
            self.reload()
            event(log, "clamd reload", generation=self.generation)
            return "RELOADING"
        if name in ("SCAN", "CONTSCAN", "MULTISCAN", "ALLMATCHSCAN"):
            lines = await self.scan_path(name, ev.argument)
            event(log, "clamd scan", command=name, path=ev.argument, results=len(lines))
            return lines
        if name == "STATS":
            return [(f"POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live 1  idle 0 max 1 "
                     f"idle-timeout 30\nQUEUE: 0 items\nSCANS: {self.scans}\nFOUND: "
                     f"{self.found}\n\nEND")]
        if name in ("DETSTATS", "DETSTATSCLEAR"):
            return "END" if name == "DETSTATS" else "DETSTATS CLEARED"
        if name in ("SHUTDOWN",):
            return None
        return "FILDES is not supported; use INSTREAM. ERROR"


async def _discard_rest(reader: asyncio.StreamReader, seconds: float = 10.0) -> None:
    """Read and drop what the client is still uploading, for a while, so closing does not
    reset the connection (a reset would destroy our error reply in the client's buffer)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        while (left := deadline - loop.time()) > 0:
            if not await asyncio.wait_for(reader.read(1 << 16), timeout=left):
                return
    except (TimeoutError, ConnectionError):
        return


def _list_files(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            if os.path.isfile(full):  # regular files only (not FIFOs, sockets, devices)
                found.append(full)
    return found


async def start(app, service: str, address: str) -> Listener:
    clamd = app.component("antivirus.clamd", ClamdService)
    listener = await serve_stream(app, service, address, clamd.handle)
    app.spawn(clamd.warm(), "clamd-warm-up")
    return listener
