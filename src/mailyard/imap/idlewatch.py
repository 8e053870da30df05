"""One process-wide poller that notices changes other processes make to idled folders.

Theory of operation: changes made inside this process (LMTP delivery, other IMAP sessions)
wake IDLE sessions at once through `mailyard.maildir.watch`. Changes from *other* processes
(a second mailyard, `mailyard` CLI tools, Dovecot, a client writing the Maildir) leave only
traces on disk: the mtimes of `new/` and `cur/` and of the folder index (SQLite in WAL mode:
its `-wal` file). A single background task stats those few files of every folder some
session is idling on, once per `interval`, and calls `watch.notify` for folders whose
signature changed. Ten thousand sessions idling on one folder cost one set of stats per
second, not ten thousand refreshes; the sessions then refresh only when woken.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mailyard.maildir import watch

INDEX_FILES = ("mailyard-index.sqlite3", "mailyard-index.sqlite3-wal")


def signature(folder_dir: Path) -> tuple:
    out = []
    for name in ("new", "cur", *INDEX_FILES):
        try:
            st = os.stat(folder_dir / name)
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


class IdlePoller:
    """Shared by every IMAP session of the process (`app.component("imap.idle", ...)`)."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._folders: dict[str, list] = {}    # key -> [folder_dir, signature, refcount]
        self._task: asyncio.Task | None = None

    def register(self, folder_dir: Path) -> str:
        key = watch.folder_key(folder_dir)
        entry = self._folders.get(key)
        if entry is None:
            self._folders[key] = [Path(folder_dir), signature(Path(folder_dir)), 1]
        else:
            entry[2] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return key

    def unregister(self, key: str) -> None:
        entry = self._folders.get(key)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] <= 0:
            del self._folders[key]

    async def _run(self) -> None:
        while self._folders:
            await asyncio.sleep(self.interval)
            for key, entry in list(self._folders.items()):
                current = signature(entry[0])
                if current != entry[1]:
                    entry[1] = current
                    watch.notify(key)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
