"""The durable spool: where a message lives from its 250 until its last recipient is done.

Theory of operation. The spool is a directory (data_dir/queue) that only this package
touches:

    tmp/            state files being written; anything here at start-up is discarded
    active/ID.q     the queue file: message, envelope record, commit marker (`spoolfile`)
    active/ID.st    the per-recipient delivery state written after the 250, if any
    hold/ID         present = the entry is on hold (`mailyard queue hold`)
    control/        requests to the scheduling process: flush, changed (from the CLI),
                    new (entries committed by another process)
    lock            flock held by the one process that schedules this spool
    corrupt/        entries start-up could not read, kept for an operator

Queue files are created ahead of need (`create_files`, a small stock kept by `Queue`, made
in a worker thread): header written, flock'ed by the creating process, and their directory
entries made durable by one fsync of active/ for the whole stock. A message streams into
one; `commit` appends the envelope record and the commit marker and fsyncs that one file —
only then does the caller get its queue id (and the client its 250). One file fsync per
message, shared by concurrent commits, instead of two file fsyncs, a rename and a
directory fsync. A file without its marker (killed mid-DATA, or an unused stock file) is
discarded at start-up unless another live process holds its flock. State updates write
tmp/ID.st.RANDOM and rename it over active/ID.st; removal unlinks ID.q (the entry) first.

Durable changes go through the group commit of `commit` (directory fsyncs shared).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mailyard.log import event, get_logger
from mailyard.queue import spoolfile
from mailyard.queue.commit import FSYNC_POOL, CommitJob, execute_batch, fsync_path, write_durably
from mailyard.queue.records import QueueEntry

log = get_logger("queue")

_counter = itertools.count()


def new_queue_id() -> str:
    """Sortable by arrival, unique without coordination: microseconds, counter, random."""
    micros = time.time_ns() // 1000
    # A PRNG suffices for the tie-breaker (no secret here; `random` is seeded from urandom and
    # reseeded after fork) and costs no syscall, where secrets.token_hex read /dev/urandom.
    return f"{micros:013X}{next(_counter) % 256:02X}{random.getrandbits(16):04X}"


def valid_queue_id(text: str) -> bool:
    return 8 <= len(text) <= 40 and all(c in "0123456789ABCDEF" for c in text)


@dataclass
class Reserved:
    """A created queue file, header written, open and flock'ed, not yet holding a message.

    `dir_durable`: its directory entry is already on disk (the creator fsynced active/),
    so its commit needs only the file's own fsync.
    """

    queue_id: str
    path: Path
    fd: int
    nonce: bytes
    dir_durable: bool = True

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def _in_use(path: Path) -> bool:
    """Whether another live process holds the file's flock (it is writing it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class Spool:
    """The queue directory: layout, start-up recovery and the synchronous operations that
    the CLI and the scheduler share. Durable asynchronous writes go through a
    `GroupCommitter` (see `Queue`)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.active = self.root / "active"
        self.hold_dir = self.root / "hold"
        self.control = self.root / "control"
        self.corrupt = self.root / "corrupt"

    def ensure(self) -> None:
        for d in (self.tmp, self.active, self.hold_dir, self.control, self.corrupt):
            d.mkdir(parents=True, exist_ok=True)

    def try_lock(self) -> int | None:
        """Become the spool's one scheduler: an exclusive flock on queue/lock, held for the
        life of the process (the kernel drops it when the process dies, even by kill -9).
        Returns the open descriptor, or None when another process holds it."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    def new_ids(self, known: set[str]) -> list[str]:
        """Queue files on disk that are not in `known` (added by another process; `load`
        tells the committed ones from those still being written)."""
        return sorted(p.name[:-2] for p in self.active.glob("*.q") if p.name[:-2] not in known)

    # -- paths ------------------------------------------------------------------------
    def entry_path(self, queue_id: str) -> Path:
        return self.active / f"{queue_id}.q"

    def state_path(self, queue_id: str) -> Path:
        return self.active / f"{queue_id}.st"

    def hold_path(self, queue_id: str) -> Path:
        return self.hold_dir / queue_id

    def read_message(self, queue_id: str, size: int) -> bytes:
        return spoolfile.read_message(self.entry_path(queue_id), size)

    # -- new files ------------------------------------------------------------------------
    def create_files(self, count: int) -> list[Reserved]:
        """Create `count` empty queue files (header only) and make their directory entries
        durable with one fsync of active/. Each stays flock'ed by this process until its
        commit or abort closes it, so a recovering process leaves it alone."""
        made: list[Reserved] = []
        try:
            for _ in range(count):
                made.append(self._create())
            fsync_path(self.active, directory=True)
        except OSError:
            for r in made:
                r.discard()
            raise
        return made

    def create_file(self) -> Reserved:
        """One queue file whose directory entry is not yet durable (the commit fsyncs it)."""
        reserved = self._create()
        reserved.dir_durable = False
        return reserved

    def _create(self) -> Reserved:
        queue_id = new_queue_id()
        path = self.entry_path(queue_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            nonce = spoolfile.new_nonce()
            os.write(fd, spoolfile.header(nonce))
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return Reserved(queue_id, path, fd, nonce)

    # -- start-up -----------------------------------------------------------------------
    def recover(self) -> list[QueueEntry]:
        """Discard half-written files, migrate old entries; every committed entry, oldest
        first."""
        self.ensure()
        for path in self.tmp.iterdir():
            path.unlink(missing_ok=True)
            event(log, "discarded half-written file", file=path.name)
        names: dict[str, set[str]] = {}
        for path in self.active.iterdir():
            stem, _, suffix = path.name.rpartition(".")
            names.setdefault(stem, set()).add(suffix)
        entries, legacy, unused = [], [], []
        for queue_id, suffixes in sorted(names.items()):
            if "q" in suffixes:
                for old in suffixes & {"msg", "env"}:    # a migration that was interrupted
                    (self.active / f"{queue_id}.{old}").unlink(missing_ok=True)
                entry = self.recover_one(queue_id, unused)
                if entry is not None:
                    entries.append(entry)
            elif suffixes == {"msg", "env"}:
                legacy.append(queue_id)
            else:
                # A state file or half a two-file entry alone: its commit never finished
                # (no 250 was given), or its removal was interrupted. Nothing to deliver.
                for suffix in suffixes:
                    (self.active / f"{queue_id}.{suffix}").unlink(missing_ok=True)
                event(log, "discarded incomplete entry", queue_id=queue_id,
                      files=",".join(sorted(suffixes)))
        if unused:
            event(log, "discarded unused queue files", count=len(unused))
        entries.extend(self._migrate(legacy))
        entries.sort(key=lambda e: e.queue_id)
        return entries

    def recover_one(self, queue_id: str, unused: list[str]) -> QueueEntry | None:
        """One queue file at start-up (or after an accepting process died): its entry when
        committed; None, having removed it, when unfinished and nobody holds it (a file
        never given a message is listed in `unused`); None when another live process is
        writing it."""
        path = self.entry_path(queue_id)
        try:
            return self.load(queue_id, strict=True)
        except spoolfile.Incomplete as exc:
            if _in_use(path):
                return None         # another process is writing it (serve --only)
            try:
                never_used = path.stat().st_size <= spoolfile.HEADER_SIZE
            except FileNotFoundError:
                return None
            path.unlink(missing_ok=True)
            self.state_path(queue_id).unlink(missing_ok=True)
            if never_used:          # made ahead, never given a message: one line for all
                unused.append(queue_id)
            else:
                event(log, "discarded incomplete entry", queue_id=queue_id, reason=str(exc))
            return None

    def _migrate(self, queue_ids: list[str]) -> list[QueueEntry]:
        """Rewrite two-file entries (ID.msg + ID.env) as queue files."""
        done = []
        for queue_id in queue_ids:
            msg, env = self.active / f"{queue_id}.msg", self.active / f"{queue_id}.env"
            try:
                entry = QueueEntry.from_json(env.read_bytes())
            except (ValueError, KeyError, TypeError) as exc:
                for src in (env, msg):
                    os.replace(src, self.corrupt / src.name)
                event(log, "unreadable queue entry moved to corrupt/", queue_id=queue_id,
                      error=repr(exc))
                continue
            staged = self.tmp / f"{queue_id}.q"
            spoolfile.write_file(staged, msg, entry)
            os.replace(staged, self.entry_path(queue_id))
            entry.held = self.hold_path(queue_id).exists()
            done.append((entry, msg, env))
        if done:
            fsync_path(self.active, directory=True)      # the new files are durable ...
            for _entry, msg, env in done:                # ... before the old ones go
                env.unlink(missing_ok=True)
                msg.unlink(missing_ok=True)
            fsync_path(self.active, directory=True)
            event(log, "migrated two-file queue entries", entries=len(done))
        return [entry for entry, _msg, _env in done]

    def load(self, queue_id: str, strict: bool = False) -> QueueEntry | None:
        """Read one committed entry (its latest state); a damaged one moves to corrupt/.

        None when there is no such committed entry (or it is still being written; with
        `strict` that case raises `spoolfile.Incomplete` instead).
        """
        try:
            entry = spoolfile.read_entry(self.entry_path(queue_id))
        except FileNotFoundError:
            return None
        except spoolfile.Incomplete:
            if strict:
                raise
            return None
        except spoolfile.Corrupt as exc:
            for src in (self.entry_path(queue_id), self.state_path(queue_id)):
                if src.exists():
                    os.replace(src, self.corrupt / src.name)
            event(log, "unreadable queue entry moved to corrupt/", queue_id=queue_id,
                  error=str(exc))
            return None
        entry = self._latest_state(entry)
        entry.held = self.hold_path(queue_id).exists()
        return entry

    def _latest_state(self, entry: QueueEntry) -> QueueEntry:
        """The entry with the state written after its commit, if any (ID.st)."""
        try:
            state = QueueEntry.from_json(self.state_path(entry.queue_id).read_bytes())
        except FileNotFoundError:
            return entry
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Written atomically, so this is damage: retrying every recipient keeps the
            # at-least-once promise; dropping the entry would break it.
            event(log, "unreadable state file; resuming from the committed envelope",
                  queue_id=entry.queue_id, error=repr(exc))
            return entry
        state.size = entry.size
        return state

    def entries(self) -> Iterator[QueueEntry]:
        """Every complete entry, oldest commit first, read-only (for the CLI).

        Ordered by commit time, not by queue id: ids are given when a queue file is made,
        and files from the stock can be older than one made on demand a moment later."""
        self.ensure()
        found = []
        for path in self.active.glob("*.q"):
            try:
                entry = self._latest_state(spoolfile.read_entry(path, check_message=False))
            except (OSError, spoolfile.Incomplete, spoolfile.Corrupt):
                continue
            entry.held = self.hold_path(entry.queue_id).exists()
            found.append(entry)
        found.sort(key=lambda e: (e.created, e.queue_id))
        yield from found

    # -- jobs ---------------------------------------------------------------------------
    def state_job(self, entry: QueueEntry) -> CommitJob:
        """Write `entry`'s state to tmp/, then swap it durably into active/ID.st."""
        tmp = self.tmp / f"{entry.queue_id}.st.{secrets.token_hex(4)}"
        state = entry.to_json()
        return CommitJob(prepare=[lambda: write_durably(tmp, state)],
                         renames=[(tmp, self.state_path(entry.queue_id))],
                         sync_dirs={self.active})

    def remove(self, queue_id: str) -> None:
        """Remove a finished entry without waiting for the journal (see `Queue._deliver`):
        should a crash undo it, the entry is delivered again — rarely twice, never lost."""
        for path in (self.entry_path(queue_id), self.state_path(queue_id),
                     self.hold_path(queue_id)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def remove_soon(self, queue_id: str, done: Callable[[str], None] | None = None) -> None:
        """`remove` in a worker thread (an unlink can wait on the journal); not awaited.
        `done(queue_id)` is called (in that thread) once it is over."""
        def run() -> None:
            try:
                self.remove(queue_id)
            except OSError as exc:      # start-up finds the entry again: delivered twice
                event(log, "could not remove a delivered entry", queue_id=queue_id,
                      error=repr(exc))
            finally:
                if done is not None:
                    done(queue_id)
        FSYNC_POOL.submit(run)

    def remove_job(self, queue_id: str) -> CommitJob:
        # The queue file goes first: a state file alone is discarded at start-up.
        return CommitJob(unlinks=[self.entry_path(queue_id), self.state_path(queue_id),
                                  self.hold_path(queue_id)],
                         sync_dirs={self.active})

    # -- synchronous operations for the CLI ------------------------------------------------
    def exists(self, queue_id: str) -> bool:
        return self.entry_path(queue_id).exists()

    def delete(self, queue_id: str) -> bool:
        if not self.exists(queue_id):
            return False
        (error,) = execute_batch([self.remove_job(queue_id)])
        if error is not None:
            raise error
        self.notify("changed")
        return True

    def set_hold(self, queue_id: str, held: bool) -> bool:
        if not self.exists(queue_id):
            return False
        marker = self.hold_path(queue_id)
        if held:
            marker.touch()
        else:
            marker.unlink(missing_ok=True)
        fsync_path(self.hold_dir, directory=True)
        self.notify("changed")
        return True

    def notify(self, request: str) -> None:
        """Leave a request ("flush" or "changed") for the running server's scheduler.

        The scheduler polls control/ every `[queue] control_poll` seconds and removes what
        it has acted on, so a request made while no server runs waits for the next start.
        """
        self.ensure()
        (self.control / request).touch()

    def take_requests(self) -> set[str]:
        """The pending control requests, removed as they are taken."""
        taken = set()
        try:
            for path in self.control.iterdir():
                path.unlink(missing_ok=True)
                taken.add(path.name)
        except FileNotFoundError:
            pass
        return taken
