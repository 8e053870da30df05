"""One shared `Folder` per open maildir folder, with a change log every session reads.

Theory of operation: a maildir `Folder` holds a snapshot of every message (about 1 KB per
message), which is fine for one session and ruinous for ten thousand sessions idling on the
same 5,000-message INBOX. So the IMAP server opens each folder once per process: a
`FolderHub` owns the `Folder`, refreshes it under a lock, and appends what changed to a
bounded log of (serial, origin, kind, uids). Each session's `SelectedMailbox` keeps only its
numbering (a tuple shared with the hub while nothing changed) and a cursor into the log.
Changes a session makes itself go through `SharedFolder`, which records them in the log with
the session as origin, so the other sessions hear about them and the session itself does not
hear its own changes twice. A session whose cursor fell off the log resynchronises from the
snapshot (`changes_since` returns None).
"""

from __future__ import annotations

import os
import threading
from collections import deque

from mailyard.maildir.errors import MessageGone
from mailyard.maildir.names import normalize

LOG_LIMIT = 20000
EXPUNGED, NEW, FLAGS = "expunged", "new", "flags"

_registry_lock = threading.Lock()
_registry: dict[str, FolderHub] = {}


class FolderHub:
    """The process-wide owner of one folder's snapshot (see module docstring)."""

    def __init__(self, folder):
        self.folder = folder
        self.lock = threading.RLock()
        self.log: deque = deque()
        self.serial = 0
        self.users = 0
        self._uids: tuple[int, ...] | None = None

    # -- the shared snapshot -------------------------------------------------------------
    def uids(self) -> tuple[int, ...]:
        with self.lock:
            if self._uids is None:
                self._uids = tuple(self.folder.uids())
            return self._uids

    def get(self, uid: int):
        try:
            return self.folder.get(uid)
        except MessageGone:
            return None

    def _record(self, origin, kind: str, uids) -> None:
        uids = tuple(uids)
        if not uids:
            return
        self.serial += 1
        self.log.append((self.serial, origin, kind, uids))
        if kind != FLAGS:
            self._uids = None
        while len(self.log) > LOG_LIMIT:
            self.log.popleft()

    def refresh(self) -> None:
        with self.lock:
            changes = self.folder.refresh()
            if changes.uid_validity_changed:
                self._uids = None
                self.log.clear()
                self.serial += LOG_LIMIT + 1   # every cursor is now stale: resync
                return
            self._record(None, EXPUNGED, changes.expunged)
            self._record(None, NEW, changes.new)
            self._record(None, FLAGS, changes.flags_changed)

    def changes_since(self, cursor: int, origin):
        """(new cursor, expunged, flag-changed) since `cursor`, leaving out `origin`'s own
        changes; None when the log no longer reaches back that far."""
        with self.lock:
            if cursor < self.serial - len(self.log):
                return None
            expunged: set[int] = set()
            flags: set[int] = set()
            for serial, who, kind, uids in self.log:
                if serial <= cursor or who is origin:
                    continue
                if kind == EXPUNGED:
                    expunged.update(uids)
                elif kind == FLAGS:
                    flags.update(uids)
            return self.serial, expunged, flags

    # -- changes made by a session -------------------------------------------------------
    def store_flags(self, origin, uids, flags, mode, unchanged_since=None):
        with self.lock:
            done = self.folder.store_flags(uids, flags, mode, unchanged_since)
            self._record(origin, FLAGS, sorted(done))
            return done

    def expunge(self, origin, uids):
        with self.lock:
            done = self.folder.expunge(uids)
            self._record(origin, EXPUNGED, done)
            return done

    def move(self, origin, uids, dest):
        with self.lock:
            mapping = self.folder.move(uids, dest)
            self._record(origin, EXPUNGED, sorted(mapping))
            return mapping


class SharedFolder:
    """What one session calls `folder`: the hub's Folder, with changes attributed to it."""

    def __init__(self, hub: FolderHub, origin):
        self._hub = hub
        self._origin = origin

    def __getattr__(self, name):
        return getattr(self._hub.folder, name)

    def store_flags(self, uids, flags, mode="add", unchanged_since=None):
        return self._hub.store_flags(self._origin, uids, flags, mode, unchanged_since)

    def expunge(self, uids=None):
        return self._hub.expunge(self._origin, uids)

    def move(self, uids, dest):
        return self._hub.move(self._origin, uids, dest)

    def refresh(self):
        self._hub.refresh()


def acquire(store, name: str) -> FolderHub:
    """The hub of folder `name` of `store`, opened on first use (blocking: call in a thread)."""
    path = store.folder_path(normalize(name))
    key = os.path.realpath(path)
    with _registry_lock:
        hub = _registry.get(key)
        reuse = hub is not None and (path / "cur").is_dir()
        if reuse:
            hub.users += 1
    if reuse:
        hub.refresh()
        return hub
    folder = store.open(name)   # raises FolderNotFound; loads the snapshot once
    with _registry_lock:
        hub = _registry.get(key)
        if hub is None:
            hub = FolderHub(folder)
            _registry[key] = hub
        hub.users += 1
    if hub.folder is not folder:
        folder.close()
    hub.refresh()
    return hub


def release(hub: FolderHub) -> None:
    with _registry_lock:
        hub.users -= 1
        if hub.users <= 0:
            key = os.path.realpath(hub.folder.path_dir)
            if _registry.get(key) is hub:
                del _registry[key]
            hub.folder.close()
