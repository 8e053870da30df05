"""The selected mailbox as one session sees it: message numbers, flags told, pending updates.

Theory of operation: a session's view is the list of UIDs it has announced (message sequence
number n is `uids[n-1]`) and the flags it last told the client for each. At the end of each
command `poll()` asks the store what changed (also by other sessions and processes) and turns
it into untagged responses: `* n EXPUNGE` (highest first, so numbers stay valid while the
client applies them), `* n EXISTS`, and `* n FETCH (FLAGS ...)` for flags someone else
changed. RFC 3501 §7.4.1 forbids EXPUNGE responses during FETCH, STORE and SEARCH (the
client would mis-number the results), so those commands poll with `allow_expunge=False`: a
message expunged meanwhile stays in the view as a ghost (fetching it answers nothing) until a
later command may announce it. With QRESYNC enabled, expunges are reported as
`* VANISHED uids` instead (RFC 7162 §3.2.10).
"""

from __future__ import annotations

import bisect

from mailyard.imap.proto import format as fmt


class SelectedMailbox:
    """A session's numbered view of one open folder."""

    def __init__(self, name: str, folder, readonly: bool):
        self.name = name
        self.folder = folder
        self.readonly = readonly
        self.infos: dict[int, object] = {}      # uid -> MessageInfo, live messages
        self.uids: list[int] = []               # announced, in sequence order
        self.told_flags: dict[int, tuple[str, ...]] = {}
        self.ghosts: set[int] = set()           # expunged, not yet announced
        self.condstore = False
        self.qresync = False
        self.uid_validity = folder.uid_validity
        self.uid_next = folder.uid_next
        self.recent: set[int] = set()
        self._load_initial()

    # -- numbering -----------------------------------------------------------------------
    def _load_initial(self) -> None:
        for info in self.folder.messages():
            self.infos[info.uid] = info
        self.uids = sorted(self.infos)
        self.told_flags = {uid: all_flags(self.infos[uid]) for uid in self.uids}
        self.dirty: set[int] = set()

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, sequence, uid: bool) -> list[int]:
        """UIDs named by a sequence set (message numbers, or UIDs when `uid`), ascending."""
        if uid:
            picked = sequence.select(self.uids)
            if not self.uids:
                return []
            # `*` with UIDs means the largest UID in use even when it is below the range
            return picked
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
        """Ask the store what changed: new messages, expunged ones (kept as ghosts until
        announced), flag changes (marked dirty until told)."""
        changes = self.folder.refresh()
        if changes.uid_validity_changed:
            # The folder was rebuilt under us: everything we numbered is gone.
            self.ghosts.update(self.uids)
            self.infos = {info.uid: info for info in self.folder.messages()}
        for uid in changes.expunged:
            self.forget(uid)
        for uid in changes.new + changes.flags_changed:
            self.reload(uid)
        self.uid_next = self.folder.uid_next

    def forget(self, uid: int) -> None:
        """A message left the folder (expunged by anyone, or moved away by us)."""
        if self.infos.pop(uid, None) is not None or uid in self.told_flags:
            self.ghosts.add(uid)

    def reload(self, uid: int) -> None:
        try:
            self.infos[uid] = self.folder.get(uid)
        except LookupError:
            self.forget(uid)
            return
        self.dirty.add(uid)

    def poll(self, allow_expunge: bool = True) -> list[bytes]:
        """Untagged responses telling the client what changed since it last heard."""
        self.sync()
        out: list[bytes] = []
        if allow_expunge and self.ghosts:
            gone = sorted(self.ghosts)
            vanished = []
            for uid in reversed(gone):
                seq = self.seq_of(uid)
                if seq is not None:
                    if self.qresync:
                        vanished.append(uid)
                    else:
                        out.append(b"* %d EXPUNGE\r\n" % seq)
                    del self.uids[seq - 1]
                self.told_flags.pop(uid, None)
            if vanished:
                out.append(b"* VANISHED " + fmt.seq_list(vanished) + b"\r\n")
            self.ghosts.clear()
        last = self.uids[-1] if self.uids else 0
        new = sorted(u for u in self.infos if u > last)
        if new:
            self.uids.extend(new)
            self.recent.update(new)
            out.append(b"* %d EXISTS\r\n" % len(self.uids))
            for uid in new:
                self.told_flags[uid] = all_flags(self.infos[uid])
        for uid in sorted(self.dirty):
            info = self.infos.get(uid)
            seq = self.seq_of(uid)
            if info is None or seq is None:
                continue
            flags = all_flags(info)
            if self.told_flags.get(uid) != flags:
                self.told_flags[uid] = flags
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


SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def all_flags(info) -> tuple[str, ...]:
    """System flags (in RFC order) then keywords (sorted), the way FLAGS lists them."""
    return tuple(f for f in SYSTEM_FLAGS if f in info.flags) + tuple(sorted(info.keywords))
