"""The selected mailbox as one session sees it: message numbers and pending updates.

Theory of operation: a session's view is the tuple of UIDs it has announced (message
sequence number n is `uids[n-1]`) and a cursor into the change log of the folder's shared
`FolderHub` (ops/hub.py); message data (flags, sizes, dates) is read from the hub's one
snapshot, so an idle session costs a cursor, not a copy of the folder. At the end of each
command `poll()` refreshes the hub and turns the log entries since the cursor (changes by
other sessions and other processes) into untagged responses: `* n EXPUNGE` (highest first,
so numbers stay valid while the client applies them), `* n EXISTS`, and `* n FETCH (FLAGS
...)`. RFC 3501 §7.4.1 forbids EXPUNGE responses during FETCH, STORE and SEARCH (the client
would mis-number the results), so those commands poll with `allow_expunge=False`: a message
expunged meanwhile stays numbered as a ghost (fetching it answers nothing) until a later
command may announce it. With QRESYNC enabled, expunges are reported as `* VANISHED uids`
instead (RFC 7162 §3.2.10).
"""

from __future__ import annotations

import bisect

from mailyard.imap.ops.hub import FolderHub, SharedFolder
from mailyard.imap.proto import format as fmt

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class InfoView:
    """Mapping-like access to the live messages of the hub's snapshot."""

    __slots__ = ("_hub",)

    def __init__(self, hub: FolderHub):
        self._hub = hub

    def get(self, uid: int, default=None):
        info = self._hub.get(uid)
        return default if info is None else info

    def __getitem__(self, uid: int):
        info = self._hub.get(uid)
        if info is None:
            raise KeyError(uid)
        return info

    def __contains__(self, uid: int) -> bool:
        return self._hub.get(uid) is not None

    def values(self):
        with self._hub.lock:   # a refresh in another thread must not change it under us
            return self._hub.folder.messages()


class SelectedMailbox:
    """A session's numbered view of one open folder."""

    def __init__(self, name: str, hub: FolderHub, readonly: bool):
        self.name = name
        self.hub = hub
        self.folder = SharedFolder(hub, self)
        self.infos = InfoView(hub)
        self.readonly = readonly
        with hub.lock:
            self.uids: tuple[int, ...] = hub.uids()
            self.cursor = hub.serial
        self.ghosts: set[int] = set()           # expunged, not yet announced
        self.dirty: set[int] = set()            # flags changed, not yet announced
        self.condstore = False
        self.qresync = False
        self.recent: frozenset = frozenset()    # \Recent is not tracked (always 0)

    @property
    def uid_validity(self) -> int:
        return self.hub.folder.uid_validity

    @property
    def uid_next(self) -> int:
        return self.hub.folder.uid_next

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, sequence, uid: bool) -> list[int]:
        """UIDs named by a sequence set (message numbers, or UIDs when `uid`), ascending."""
        if uid:
            return sequence.select(self.uids)
        n = len(self.uids)
        out = []
        for lo, hi in sequence.bounds(n):
            if lo < 1 or hi > n:
                raise IndexError("message number out of range")
            out.extend(self.uids[lo - 1:hi])
        return sorted(set(out))

    def live(self, uids) -> list[int]:
        return [u for u in uids if u in self.infos]

    # -- updates -------------------------------------------------------------------------
    def sync(self) -> None:
        """Refresh the hub and collect what changed for this session since its cursor."""
        self.hub.refresh()
        result = self.hub.changes_since(self.cursor, self)
        if result is None:   # fell off the log: compare numbering with the snapshot
            current = set(self.hub.uids())
            self.ghosts.update(u for u in self.uids if u not in current)
            self.dirty.update(u for u in self.uids if u in current)
            self.cursor = self.hub.serial
            return
        self.cursor, expunged, flags = result
        for uid in expunged:
            if self.seq_of(uid) is not None:
                self.ghosts.add(uid)
        self.dirty.update(flags)

    def forget(self, uid: int) -> None:
        """This session expunged or moved a message away itself."""
        if self.seq_of(uid) is not None:
            self.ghosts.add(uid)

    def reload(self, uid: int) -> None:
        """Flags of a message this session changed itself (told in its own response)."""
        self.dirty.discard(uid)

    def poll(self, allow_expunge: bool = True) -> list[bytes]:
        """Untagged responses telling the client what changed since it last heard."""
        self.sync()
        out: list[bytes] = []
        if allow_expunge and self.ghosts:
            gone = sorted(self.ghosts)
            uids = list(self.uids)
            if self.qresync:
                out.append(b"* VANISHED " + fmt.seq_list(gone) + b"\r\n")
            for uid in reversed(gone):
                i = bisect.bisect_left(uids, uid)
                if i < len(uids) and uids[i] == uid:
                    if not self.qresync:
                        out.append(b"* %d EXPUNGE\r\n" % (i + 1))
                    del uids[i]
            self.ghosts.clear()
            self.uids = tuple(uids)
        current = self.hub.uids()
        last = self.uids[-1] if self.uids else 0
        start = bisect.bisect_right(current, last)
        if start < len(current):
            new = current[start:]
            if not self.ghosts and len(self.uids) + len(new) == len(current):
                self.uids = current               # in step with the hub: share its tuple
            else:
                self.uids = self.uids + tuple(new)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            self.dirty.difference_update(new)
        for uid in sorted(self.dirty):
            info = self.hub.get(uid)
            seq = self.seq_of(uid)
            if info is not None and seq is not None:
                out.append(self.flags_response(seq, info))
        self.dirty.clear()
        return out

    def flags_response(self, seq: int, info, with_uid: bool = False) -> bytes:
        items = []
        if with_uid or self.qresync:
            items.append(b"UID %d" % info.uid)
        items.append(b"FLAGS " + fmt.flag_list(all_flags(info)))
        if self.condstore:
            items.append(b"MODSEQ (%d)" % info.modseq)
        return b"* %d FETCH (" % seq + b" ".join(items) + b")\r\n"

    def close(self) -> None:
        from mailyard.imap.ops.hub import release

        hub, self.hub = self.hub, None
        if hub is not None:
            release(hub)


def all_flags(info) -> tuple[str, ...]:
    """System flags (in RFC order) then keywords (sorted), the way FLAGS lists them."""
    return tuple(f for f in SYSTEM_FLAGS if f in info.flags) + tuple(sorted(info.keywords))
