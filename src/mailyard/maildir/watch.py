"""In-process change notification for folders (what IMAP IDLE waits on).

Theory of operation: every change the store makes to a folder (a delivery, APPEND, COPY,
flag change, expunge) calls `notify(key)` after its transaction commits, where `key` is the
folder's directory path. A session that wants to wait creates a `FolderWatch` for the same
folder (`folder.watch()`), then `await watch.wait(timeout)`: it returns True as soon as the
folder changed since the watch was created or last waited on, False on timeout. Changes made
by *other processes* (another mailyard, Dovecot, a mail client writing the Maildir) are not
signalled: an IDLE loop waits with a timeout of a few seconds and calls `folder.refresh()`
either way, which picks those up from the files.

`notify` is safe to call from any thread (the store's blocking work may run in
`asyncio.to_thread`); waiters are woken on their own event loop.

    with folder.watch() as w:
        while idling:
            await w.wait(timeout=5.0)
            changes = await asyncio.to_thread(folder.refresh)
            ...
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Self

_lock = threading.Lock()
_watchers: dict[str, set[FolderWatch]] = {}


def folder_key(folder_dir) -> str:
    """The key a folder directory is watched under (its resolved path)."""
    return os.path.realpath(folder_dir)


class FolderWatch:
    """A subscription to change notifications of one folder; use as a context manager."""

    def __init__(self, folder_dir):
        self.key = folder_key(folder_dir)
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._closed = False
        with _lock:
            _watchers.setdefault(self.key, set()).add(self)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the folder changes; True if it did, False when `timeout` passed."""
        try:
            if timeout is None:
                await self._event.wait()
            else:
                await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def changed(self) -> bool:
        """True (and reset) if a change was signalled since the last check, without waiting."""
        if self._event.is_set():
            self._event.clear()
            return True
        return False

    def _wake(self) -> None:
        if self._closed:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
            return
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the waiter's loop is closed
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _lock:
            group = _watchers.get(self.key)
            if group is not None:
                group.discard(self)
                if not group:
                    del _watchers[self.key]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()


def watch(folder_dir) -> FolderWatch:
    """Start watching a folder directory (call from inside the event loop)."""
    return FolderWatch(folder_dir)


def notify(key: str) -> None:
    """Signal every watcher of folder `key` (from `folder_key`) that it changed."""
    with _lock:
        group = list(_watchers.get(key, ()))
    for w in group:
        w._wake()
