"""The queue file: one file per message holding the message, its envelope and a commit mark.

Theory of operation. A queue entry is `active/ID.q`, written front to back while the
message streams in and made durable by one fsync of that one file:

    header   16 bytes   MAGIC (8) + a random nonce (8), written when the file is created
    message  N bytes    exactly as received (never rewritten)
    record   E bytes    the `QueueEntry` JSON (envelope + initial delivery state)
    footer   36 bytes   COMMIT (8), the nonce again (8), N (8), E (4), CRC-32 of the record
                        (4), CRC-32 of the message (4)

The footer is the commit marker and it is written last, in the same fsync as the rest. A
file whose last 36 bytes are not a footer that matches its size and its header's nonce was
never committed (no client got a 250 for it: the 250 waits for that fsync): start-up
discards it. The nonce makes the marker unforgeable by message content — a client cannot
end its DATA with bytes that look like a footer, because it never learns the nonce (the
record it would have to forge carries the recipients and the route). A file with a valid
footer whose CRCs or record do not check was committed and then damaged: it is kept in
corrupt/ for an operator, never guessed at.

Per-recipient state changes after the 250 go to `active/ID.st` (the same JSON, replaced
atomically through tmp/ + rename + directory fsync); when present it supersedes the record.
Entries of the two-file format (ID.msg + ID.env) are rewritten into this one at start-up.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from mailyard.queue.records import QueueEntry

MAGIC = b"MYQUEUE1"
COMMIT = b"MYCOMMIT"
NONCE_SIZE = 8
HEADER_SIZE = len(MAGIC) + NONCE_SIZE
_FOOTER = struct.Struct(">8s8sQIII")
FOOTER_SIZE = _FOOTER.size
MESSAGE_OFFSET = HEADER_SIZE
_CHUNK = 1 << 20


class Incomplete(Exception):
    """The file carries no commit marker: never acknowledged, safe to discard."""


class Corrupt(Exception):
    """The file was committed but its contents do not check: keep it for an operator."""


def new_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def header(nonce: bytes) -> bytes:
    return MAGIC + nonce


def footer(nonce: bytes, message_size: int, record: bytes, message_crc: int) -> bytes:
    return _FOOTER.pack(COMMIT, nonce, message_size, len(record), zlib.crc32(record),
                        message_crc)


def tail(nonce: bytes, message_size: int, message_crc: int, record: bytes) -> bytes:
    """What a commit appends after the message: the record and the footer."""
    return record + footer(nonce, message_size, record, message_crc)


def read_entry(path: Path, check_message: bool = True) -> QueueEntry:
    """Parse and check a queue file; its `size` is the message's length in it.

    Raises Incomplete (no commit marker), Corrupt (marked but damaged) or OSError.
    """
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        if total < HEADER_SIZE + FOOTER_SIZE:
            raise Incomplete(f"{total} bytes, shorter than header and footer")
        head = f.read(HEADER_SIZE)
        f.seek(total - FOOTER_SIZE)
        mark, nonce, size, record_size, record_crc, message_crc = _FOOTER.unpack(
            f.read(FOOTER_SIZE))
        if head[:len(MAGIC)] != MAGIC or mark != COMMIT or nonce != head[len(MAGIC):] \
                or HEADER_SIZE + size + record_size + FOOTER_SIZE != total:
            raise Incomplete("no commit marker")
        f.seek(HEADER_SIZE + size)
        record = f.read(record_size)
        if zlib.crc32(record) != record_crc:
            raise Corrupt("record checksum mismatch")
        if check_message:
            f.seek(HEADER_SIZE)
            crc, left = 0, size
            while left:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    raise Corrupt("message shorter than recorded")
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
            if crc != message_crc:
                raise Corrupt("message checksum mismatch")
    try:
        entry = QueueEntry.from_json(record)
    except (ValueError, KeyError, TypeError) as exc:
        raise Corrupt(f"unreadable record: {exc!r}") from exc
    entry.size = size
    return entry


def read_message(path: Path, size: int) -> bytes:
    """The message bytes of a queue file."""
    with open(path, "rb") as f:
        f.seek(MESSAGE_OFFSET)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"{path.name}: message shorter than its {size} bytes")
    return data


def write_file(path: Path, message_source: Path | bytes, entry: QueueEntry) -> None:
    """Write a complete queue file and fsync it (migration of old entries, tests).

    `message_source` is the message bytes or a file to copy them from in chunks.
    """
    nonce = new_nonce()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, header(nonce))
        crc = size = 0
        chunks = [message_source] if isinstance(message_source, bytes) \
            else _chunks(message_source)
        for chunk in chunks:
            write_all(fd, chunk)
            crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        entry.size = size
        write_all(fd, tail(nonce, size, crc, entry.to_json()))
        os.fsync(fd)
    finally:
        os.close(fd)


def _chunks(path: Path):
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def write_all(fd: int, data: bytes) -> None:
    """os.write until all of `data` is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
