"""`Incoming`: one message being received into the spool (see `spool` and `service`)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from mailyard.envelope import Envelope
from mailyard.log import event, get_logger
from mailyard.queue.records import new_entry
from mailyard.queue.routing import stage_for
from mailyard.queue.spool import CommitJob, close_durably, write_durably

if TYPE_CHECKING:
    from mailyard.queue.service import Queue

log = get_logger("queue")


class Incoming:
    """A message being received: `write` chunks, then `commit` (or `abort`).

    Writes go to active/ID.msg (page cache only; nothing buffered here
    beyond the file object's buffer). `commit` raises OSError when the message could not
    be made durable (disk full, I/O error): answer the client 451 then.
    """

    def __init__(self, queue: Queue, envelope: Envelope, queue_id: str, path, file):
        self.queue = queue
        self.envelope = envelope
        self.queue_id = queue_id
        self.size = 0
        self._path = path
        self._file = file
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self.size += len(chunk)

    async def commit(self) -> str:
        if self._done:
            raise RuntimeError("commit after commit or abort")
        self._done = True
        spool = self.queue.spool
        env_tmp = spool.tmp / f"{self.queue_id}.env"
        try:
            now = time.time()
            envelope = self.envelope
            if not envelope.received_at:
                envelope = dataclasses.replace(envelope, received_at=now)
            stage = stage_for(envelope.received_via, envelope.skip_scan,
                              self.queue.filter_address)
            entry = new_entry(self.queue_id, envelope, now, stage, self.size)
            state = entry.to_json()
            await self.queue.committer.run(CommitJob(
                # File system calls that may wait on the journal run in the commit thread.
                # Each is fsynced through the descriptor that wrote it (measured against
                # close-then-fsync-by-path of all files in parallel: no worse, fewer calls).
                prepare=[lambda: close_durably(self._file),
                         lambda: write_durably(env_tmp, state)],
                # The message was written in active/ already; this rename makes the pair.
                renames=[(env_tmp, spool.env_path(self.queue_id))],
                sync_dirs={spool.active}))
        except BaseException:
            with contextlib.suppress(OSError):
                self._file.close()
            for path in (self._path, env_tmp):
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise
        self.queue._admit(entry)
        event(log, "queued", queue_id=self.queue_id, sender=f"<{envelope.sender}>",
              recipients=len(entry.recipients), size=self.size,
              via=envelope.received_via, stage=stage)
        return self.queue_id

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._path.unlink(missing_ok=True)
