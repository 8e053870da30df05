"""Read-ahead for sequential RETR: the next message's wire form, ready before it is asked for.

Theory of operation
-------------------
A POP3 client that downloads a maildrop sends RETR 1, RETR 2, ... one at a time and waits for
each answer, so what it sees is the server's latency per command: read the command, open and
read the file, byte-stuff it, send. Once the answer to RETR n has been handed to the socket, the
server is idle while the client parses it; `ReadAhead` uses that moment to read message n+1,
put it in wire form (CRLF, byte-stuffed, RFC 1939 §3) and keep it, so that the next RETR costs
a `stat` and a write.

Correctness rests on Maildir's rule that a message file's content never changes: another
session (IMAP) can only rename it (a flag change) or unlink it (an expunge). An entry keeps the
path it was read from and the inode and size it had; `take()` answers from the entry only when
`stat` of that path still shows the same inode and size, that is when reading the file now
would give the same octets. Otherwise the entry is dropped and the caller reads the file as it
always has, which finds a renamed file through the store or answers -ERR for an expunged one.
The race that remains (an expunge between the check and the send) is the one a plain read has
too.

Memory is bounded: only messages up to `max_message` octets are read ahead (larger ones are read
off the event loop's thread when asked for), and the entries together hold at most `max_bytes`
(oldest dropped first). The session drops an entry on DELE and all of them on RSET and QUIT.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_MAX_BYTES = 4 << 20
DEFAULT_MAX_MESSAGE = 256 * 1024


@dataclass(frozen=True)
class Prefetched:
    """One message read ahead: its wire form and the file it came from."""

    path: str  # relative to the directory the caller passes to take()
    inode: int
    file_size: int
    body: bytes  # wire form: CRLF line ends, byte-stuffed, without the "." terminator


class ReadAhead:
    """A small bounded store of messages in wire form, keyed by message number."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_message: int = DEFAULT_MAX_MESSAGE):
        self.max_bytes = max_bytes
        self.max_message = max_message
        self._entries: dict[int, Prefetched] = {}
        self._bytes = 0

    def __contains__(self, number: int) -> bool:
        return number in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def put(self, number: int, entry: Prefetched) -> None:
        if len(entry.body) > self.max_bytes:
            return
        self.discard(number)
        while self._entries and self._bytes + len(entry.body) > self.max_bytes:
            self.discard(next(iter(self._entries)))
        self._entries[number] = entry
        self._bytes += len(entry.body)

    def take(self, number: int, dir_fd: int | None = None) -> bytes | None:
        """The wire form of message `number` if it was read ahead and its file is unchanged
        (`dir_fd`: the directory a relative entry path starts from)."""
        entry = self._entries.pop(number, None)
        if entry is None:
            return None
        self._bytes -= len(entry.body)
        try:
            st = os.stat(entry.path, dir_fd=dir_fd)
        except OSError:
            return None  # renamed or expunged meanwhile: the caller reads it the usual way
        if st.st_ino != entry.inode or st.st_size != entry.file_size:
            return None
        return entry.body

    def discard(self, number: int) -> None:
        entry = self._entries.pop(number, None)
        if entry is not None:
            self._bytes -= len(entry.body)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
