"""`Incoming`: one message being received into the spool; `Stock`: queue files made ahead.

Theory of operation. A message is received into a queue file that already exists (see
`spool`: created, header written and its directory entry fsynced before anyone needed it),
taken from a small `Stock` the queue refills in a worker thread whenever it runs low, so
neither the file's creation nor its directory entry's journal commit is on a client's
critical path. Small messages stay in memory until the commit, which appends the envelope
record and the commit marker, writes everything with one `write`, fsyncs the file and
closes it — in a commit worker thread, grouped with the other commits in flight. When the
stock is empty (a burst larger than it) a file is created on demand, and its commit also
fsyncs active/.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import time
import zlib
from typing import TYPE_CHECKING

from mailyard.envelope import Envelope
from mailyard.log import event, get_logger
from mailyard.queue import spoolfile
from mailyard.queue.commit import FSYNC_POOL, CommitJob
from mailyard.queue.records import new_entry
from mailyard.queue.routing import stage_for
from mailyard.queue.spool import Reserved, Spool

if TYPE_CHECKING:
    from mailyard.queue.service import Queue

log = get_logger("queue")

# Message bytes held in memory before they go to the file (page cache) in one write.
FLUSH_AT = 256 * 1024


def _finish(fd: int, data: bytes) -> None:
    """Append `data`, fsync and close (runs in a commit thread; always closes `fd`)."""
    try:
        spoolfile.write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class Incoming:
    """A message being received: `write` chunks, then `commit` (or `abort`).

    `commit` returns the queue id once the message and its envelope are on disk; it
    raises OSError when they could not be made durable (disk full, I/O error): answer
    the client 451 then.
    """

    def __init__(self, queue: Queue, envelope: Envelope, reserved: Reserved):
        self.queue = queue
        self.envelope = envelope
        self.queue_id = reserved.queue_id
        self.size = 0
        self._reserved = reserved
        self._buffer = bytearray()
        self._crc = 0
        self._flushed = False
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._buffer += chunk
        self.size += len(chunk)
        self._crc = zlib.crc32(chunk, self._crc)
        if len(self._buffer) >= FLUSH_AT:
            spoolfile.write_all(self._reserved.fd, self._buffer)
            self._buffer.clear()
            self._flushed = True

    async def commit(self) -> str:
        if self._done:
            raise RuntimeError("commit after commit or abort")
        self._done = True
        reserved, spool = self._reserved, self.queue.spool
        submitted = False
        try:
            now = time.time()
            envelope = self.envelope
            if not envelope.received_at:
                envelope = dataclasses.replace(envelope, received_at=now)
            stage = stage_for(envelope.received_via, envelope.skip_scan,
                              self.queue.filter_address)
            entry = new_entry(self.queue_id, envelope, now, stage, self.size)
            self._buffer += spoolfile.tail(reserved.nonce, self.size, self._crc,
                                           entry.to_json())
            data, self._buffer = bytes(self._buffer), bytearray()
            # All of it still in memory (no earlier flush): keep it for the first attempt.
            message = data[:self.size] if len(data) > self.size + spoolfile.FOOTER_SIZE \
                and not self._flushed else None
            committer = self.queue.committer
            submitted = True       # from here on the commit thread owns (and closes) the fd
            if reserved.dir_durable and committer.group:
                await committer.run_file(_finish, reserved.fd, data)
            else:
                await committer.run(CommitJob(prepare=[lambda: _finish(reserved.fd, data)],
                                              sync_dirs={spool.active}))
        except BaseException:
            if not submitted:
                with contextlib.suppress(OSError):
                    os.close(reserved.fd)
            with contextlib.suppress(OSError):
                reserved.path.unlink(missing_ok=True)
            raise
        self.queue._admit(entry, message)
        event(log, "queued", queue_id=self.queue_id, sender=f"<{envelope.sender}>",
              recipients=len(entry.recipients), size=self.size,
              via=envelope.received_via, stage=stage)
        return self.queue_id

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._buffer = bytearray()
        self._reserved.discard()


class Stock:
    """Queue files created ahead of need (see the module docstring).

    `take()` returns one or None (then create one with `spool.create_file`); taking one
    when `low` or fewer are left starts a refill up to `size` in a worker thread, as
    `fill()` does (the MTA's listeners call it at start).
    """

    def __init__(self, spool: Spool, size: int = 64, low: int = 40):
        self.spool = spool
        self.size = size
        self.low = low
        self._files: collections.deque[Reserved] = collections.deque()
        self._refill: asyncio.Task | None = None
        self._closed = False

    def take(self) -> Reserved | None:
        if len(self._files) <= self.low:
            self.fill()
        return self._files.popleft() if self._files else None

    def fill(self) -> None:
        """Start making files up to `size` (unless that is under way already)."""
        if not self._closed and (self._refill is None or self._refill.done()):
            self._refill = asyncio.get_running_loop().create_task(
                self._fill(self.size - len(self._files)), name="queue-stock")

    async def _fill(self, count: int) -> None:
        if count <= 0:
            return
        try:
            made = await asyncio.get_running_loop().run_in_executor(
                FSYNC_POOL, self.spool.create_files, count)
        except OSError as exc:          # disk full...: receivers create their own and fail
            event(log, "could not create queue files ahead", error=repr(exc))
            return
        if self._closed:
            for reserved in made:
                reserved.discard()
            return
        self._files.extend(made)

    async def close(self) -> None:
        """Remove the unused files (start-up would discard them too)."""
        self._closed = True
        if self._refill is not None:
            await asyncio.wait({self._refill})
        while self._files:
            self._files.popleft().discard()
