"""A POP3 maildrop over the Maildir store, and the TRANSACTION commands against it.

`Maildrop` is one session's view of a user's INBOX (RFC 1939 §5 "maildrop"): at login it takes
a snapshot of the folder and numbers its messages 1..N in UID order. Mail arriving later is not
shown in this session (message numbers must stay stable, §5) and appears in the next one.
DELE only marks; RSET unmarks; the marked messages are expunged from the store at a clean QUIT
(`commit()`, the UPDATE state of §6), so a message deleted over POP3 is gone for IMAP too, and
a session that ends any other way (dropped connection, timeout, crash) deletes nothing.

Unique ids (UIDL, RFC 1939 §7) are `%08X%08X` of the IMAP UID and the folder's UIDVALIDITY,
the scheme Dovecot uses by default (`pop3_uidl_format = %08Xu%08Xv`), so they are stable across
sessions, tie each POP3 message to its IMAP UID, and survive a migration from Dovecot. If the
folder's UIDVALIDITY ever changes, the ids change too and clients download once more — never
the opposite error of skipping mail.

Sizes are the octets a client counts (CRLF line ends): the store's RFC822.SIZE, which it
computes once at delivery (or when it first indexes a foreign file) and keeps in its index,
the same number IMAP reports. (A foreign file whose last line lacks a line end is sent with
one added, 2 octets more than listed; files the store writes always end in CRLF.)

Messages need no scan to be sent: the store records at delivery where a CRLF-terminated
file's lines starting with "." begin (`maildir.files.dot_lines`; usually nowhere), and
`open_verbatim()` hands such a file out, opened, for the server to send in pieces with a "."
before each of those offsets (sendfile on a plaintext connection; `wire.stuff_at` otherwise).
The fact is trusted only while the file is as long as its listed size; a message without it
(a foreign file, an index rebuilt, an unterminated last line) is scanned as before.
A session that reads the other messages in order is answered from `readahead.ReadAhead`: after
RETR n the server calls `prefetch(n + 1)`, and `take_ahead()` hands the wire form out only if
the file is unchanged (see that module for why this is exact). Files are opened relative to
the folder's directory, held open for the session (a shorter path walk per message).

`MailboxLock` makes sessions exclusive per mailbox (RFC 1939 §4: the server takes an
exclusive-access lock on the maildrop at login): `flock` on a file under data_dir/run/pop3, so
it holds across processes and is released by the kernel if the process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mailyard.maildir.files import CACHE_DOT_LINES, read_file
from mailyard.pop3 import proto, wire
from mailyard.pop3.proto import Dele, List, Noop, Retr, Rset, Stat, Top, Uidl
from mailyard.pop3.readahead import Prefetched, ReadAhead

# Messages larger than this are read off the event loop's thread (and never read ahead).
LARGE_MESSAGE = 256 * 1024


class DropError(Exception):
    """A command names a message that does not exist or is marked deleted (answer -ERR)."""


@dataclass(frozen=True)
class DropMessage:
    """One message of the maildrop as this session numbers it."""

    number: int
    uid: int
    size: int          # octets as the client will count them
    uidl: str
    filename: str      # relative to the folder directory: new/BASE or cur/BASE:2,FLAGS
    # Where the file's lines starting with "." begin, as the store recorded; None: unknown.
    dot_lines: tuple[int, ...] | None = None


def _offsets(recorded: str | None) -> tuple[int, ...] | None:
    if recorded is None:
        return None
    try:
        return tuple(map(int, recorded.split()))
    except (ValueError, AttributeError):
        return None  # not ours to trust: scan


def stuffed(message: DropMessage, raw: bytes) -> bytes:
    """The RETR body of `message` from `raw`, its file's octets with CRLF line ends."""
    if message.dot_lines is not None and len(raw) == message.size:
        return wire.stuff_at(raw, message.dot_lines)
    return proto.wire_message(raw, crlf=True)


def uidl_for(uid: int, uid_validity: int) -> str:
    return f"{uid:08X}{uid_validity:08X}"


class MailboxLock:
    """An exclusive, non-blocking, cross-process lock on one user's maildrop."""

    def __init__(self, lock_dir: Path, user: str):
        digest = hashlib.sha256(user.encode("utf-8")).hexdigest()[:32]
        self.path = lock_dir / f"{digest}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Maildrop:
    """One POP3 session's snapshot of a mailbox folder (see the module docstring)."""

    def __init__(self, folder, read_ahead: ReadAhead | None = None):
        self.folder = folder
        self.messages: list[DropMessage] = []
        self.deleted: set[int] = set()
        self.ahead = read_ahead if read_ahead is not None else ReadAhead(
            max_message=LARGE_MESSAGE)
        self._dir_fd: int | None = None

    def load(self) -> None:
        """Take the snapshot (blocking file-system work: run it off the event loop)."""
        self.folder.refresh()
        self._dir = str(self.folder.path_dir)
        if self._dir_fd is None:
            self._dir_fd = os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        validity = self.folder.uid_validity
        infos = sorted(self.folder.messages(), key=lambda m: m.uid)
        known = self.folder.cache_get_many([info.uid for info in infos], CACHE_DOT_LINES)
        self.messages = [DropMessage(number, info.uid, info.size, uidl_for(info.uid, validity),
                                     info.filename, _offsets(known.get(info.uid)))
                         for number, info in enumerate(infos, 1)]
        self.deleted = set()
        self.ahead.clear()

    def close(self) -> None:
        """Forget the read-ahead and close the folder directory (end of the session)."""
        self.ahead.clear()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    # -- lookups --------------------------------------------------------------------------
    def get(self, number: int) -> DropMessage:
        if not 1 <= number <= len(self.messages):
            raise DropError(proto.REPLY_NO_MESSAGE)
        if number in self.deleted:
            raise DropError(proto.REPLY_DELETED)
        return self.messages[number - 1]

    def live(self) -> list[DropMessage]:
        return [m for m in self.messages if m.number not in self.deleted]

    def stat(self) -> tuple[int, int]:
        live = self.live()
        return len(live), sum(m.size for m in live)

    def read(self, number: int) -> bytes:
        """The message with CRLF line ends (may raise the store's MessageGone).

        The store's files are CRLF already, so the file at `folder.path()` is read as it is
        and only converted when it is not (a foreign LF-only file). Normalising never
        shortens a message and lengthens it by one octet per bare CR or LF, so a file exactly
        as long as its indexed RFC822.SIZE is CRLF throughout: no scan, no copy.
        """
        message = self.get(number)
        try:
            # The snapshot's file name first (no stat, no Path objects); it is stale only if
            # another session changed the message's flags, and then the store finds it.
            raw = read_file(message.filename, message.size, self._dir_fd)
        except FileNotFoundError:
            try:
                raw = read_file(str(self.folder.path(message.uid)), message.size)
            except FileNotFoundError:
                return self.folder.read(message.uid)
        if len(raw) != message.size:
            return proto.to_crlf(raw)
        return raw

    def open_verbatim(self, number: int) -> int | None:
        """An open file descriptor of live message `number` if its file can be sent as it is,
        with a "." before each of its recorded `dot_lines`.

        That is: the store recorded the dot-lines and the file (at the snapshot's name) is
        exactly as long as the listed size, so it is the file the fact is about. None
        otherwise (not recorded, renamed or removed meanwhile, not as indexed): the caller
        then takes the usual read path. The caller closes the descriptor.
        """
        message = self.messages[number - 1]
        if message.dot_lines is None:
            return None
        try:
            fd = os.open(message.filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size == message.size:
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    # -- read-ahead -----------------------------------------------------------------------
    def prefetch(self, number: int) -> None:
        """Read message `number` ahead in wire form, if it is small and live; never raises.

        Nothing is kept when the snapshot's file name is stale (another session renamed the
        file) or the file is not as indexed: the RETR then reads it the usual way.
        """
        if not 1 <= number <= len(self.messages) or number in self.deleted \
                or number in self.ahead:
            return
        message = self.messages[number - 1]
        if message.size > self.ahead.max_message:
            return
        try:
            fd = os.open(message.filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if st.st_size > message.size:
                return  # never as indexed: leave it to read()
            raw = os.read(fd, st.st_size)
        except OSError:
            return
        finally:
            os.close(fd)
        if len(raw) != st.st_size:
            return
        # Same rule as read(): a file as long as its RFC822.SIZE is CRLF throughout, and
        # then a dot-safe one is its own wire form.
        if len(raw) == message.size:
            body = stuffed(message, raw)
        else:
            body = proto.wire_message(raw)
        self.ahead.put(number, Prefetched(message.filename, st.st_ino, st.st_size, body))

    def take_ahead(self, number: int) -> bytes | None:
        """The wire form of live message `number` if it was read ahead and is unchanged."""
        return self.ahead.take(number, self._dir_fd)

    # -- changes --------------------------------------------------------------------------
    def delete(self, number: int) -> None:
        self.get(number)
        self.deleted.add(number)
        self.ahead.discard(number)

    def reset(self) -> None:
        self.deleted.clear()
        self.ahead.clear()

    def commit(self) -> int:
        """RFC 1939 §6 UPDATE: expunge the marked messages from the store."""
        self.ahead.clear()
        uids = [self.messages[n - 1].uid for n in sorted(self.deleted)]
        if uids:
            self.folder.expunge(uids)
        return len(uids)


def answer(p: proto.ServerProtocol, drop: Maildrop, event) -> None:
    """Answer one TRANSACTION command other than RETR/TOP/QUIT (no file reads)."""
    try:
        if isinstance(event, Stat):
            count, octets = drop.stat()
            p.ok(f"{count} {octets}")
        elif isinstance(event, List):
            if event.number is None:
                live = drop.live()
                count, octets = len(live), sum(m.size for m in live)
                p.multiline_lines(f"{count} messages ({octets} octets)",
                                  [f"{m.number} {m.size}" for m in live])
            else:
                m = drop.get(event.number)
                p.ok(f"{m.number} {m.size}")
        elif isinstance(event, Uidl):
            if event.number is None:
                p.multiline_lines("", [f"{m.number} {m.uidl}" for m in drop.live()])
            else:
                m = drop.get(event.number)
                p.ok(f"{m.number} {m.uidl}")
        elif isinstance(event, Dele):
            drop.delete(event.number)
            p.ok(f"Message {event.number} deleted.")
        elif isinstance(event, Rset):
            drop.reset()
            count, octets = drop.stat()
            p.ok(f"{count} messages ({octets} octets).")
        elif isinstance(event, Noop):
            p.ok()
        else:
            raise TypeError(f"not a simple TRANSACTION command: {event!r}")
    except DropError as exc:
        p.err(str(exc))


def retrieve(p: proto.ServerProtocol, drop: Maildrop, event: Retr | Top, raw: bytes) -> None:
    """Answer RETR or TOP with the message `raw` already read (CRLF line ends)."""
    m = drop.get(event.number)
    if isinstance(event, Retr):
        p.multiline(f"{m.size} octets", stuffed(m, raw))
    else:
        p.multiline("", proto.byte_stuff(proto.top_of(raw, event.lines, crlf=True)))
