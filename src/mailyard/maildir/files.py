"""Maildir file names and durable writes.

A message file is `new/BASE` or `cur/BASE:2,INFO`. BASE is unique per message and never
changes: `SECS.MUSECPpidQn_RANDOM.HOST,S=SIZE,W=VSIZE` (the `,S=` size on disk and `,W=` size
with CRLF line ends, as Dovecot writes). INFO holds the flag letters in ASCII order: upper
case for system flags (D F P R S T), lower case a..z for keywords, mapped through the folder's
`dovecot-keywords` file. The BASE is what UIDs are attached to.

Writes follow the Maildir rule: write to `tmp/`, fsync the file, rename into `new/` or `cur/`,
fsync the directory — a delivered message survives a crash the moment its UID is returned.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

INFO_SEP = ":2,"

# IMAP system flag <-> Maildir info letter (RFC 3501 §2.3.2; cr.yp.to/proto/maildir.html).
FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "$Forwarded": "P",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
LETTER_FLAGS = {v: k for k, v in FLAG_LETTERS.items()}
SYSTEM_FLAGS = frozenset(k for k in FLAG_LETTERS if k.startswith("\\"))
_SIZE_RE = re.compile(r",S=(\d+)")
_VSIZE_RE = re.compile(r",W=(\d+)")
_counter = itertools.count(1)


def _hostname() -> str:
    # Maildir: "/" and ":" in the host name are written as octal escapes.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


_HOST = _hostname()


def new_base(size: int, vsize: int) -> str:
    """A fresh unique file BASE carrying the sizes."""
    now = time.time()
    secs = int(now)
    usec = int((now - secs) * 1_000_000)
    unique = f"M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(4)}"
    return f"{secs}.{unique}.{_HOST},S={size},W={vsize}"


@dataclass(frozen=True)
class ParsedName:
    """What a directory entry of new/ or cur/ says about its message."""

    base: str
    letters: str  # the info letters ("" for files without info)
    subdir: str  # "new" or "cur"
    entry: str  # the file name itself
    has_info: bool = False  # the name carries ":2," (then `letters` are its flags)

    @property
    def filename(self) -> str:
        return f"{self.subdir}/{self.entry}"

    @property
    def size_hint(self) -> int | None:
        m = _SIZE_RE.search(self.base)
        return int(m.group(1)) if m else None

    @property
    def vsize_hint(self) -> int | None:
        m = _VSIZE_RE.search(self.base)
        return int(m.group(1)) if m else None


def parse_entry(subdir: str, entry: str) -> ParsedName | None:
    """Parse one file name from new/ or cur/; None for entries that are not messages."""
    if entry.startswith("."):
        return None
    base, sep, info = entry.partition(INFO_SEP)
    if not sep:
        # Some tools on filesystems without ":" use ";" or "!" as the separator.
        for alt in (";2,", "!2,"):
            base, sep, info = entry.partition(alt)
            if sep:
                break
        else:
            base, info = entry, ""
    if not base:
        return None
    return ParsedName(base=base, letters=info, subdir=subdir, entry=entry, has_info=bool(sep))


def letters_to_flags(letters: str, keyword_names: dict[str, str]) -> tuple[frozenset, frozenset]:
    """(system flags, keywords) for info letters; unknown lower-case letters are ignored."""
    flags = set()
    keywords = set()
    for ch in letters:
        if ch in LETTER_FLAGS:
            flag = LETTER_FLAGS[ch]
            (flags if flag.startswith("\\") else keywords).add(flag)
        elif "a" <= ch <= "z" and ch in keyword_names:
            keywords.add(keyword_names[ch])
    return frozenset(flags), frozenset(keywords)


def flags_to_letters(flags, keywords, keyword_letters: dict[str, str]) -> str:
    """Info letters in ASCII order for system flags + keywords (unmapped keywords omitted)."""
    out = {FLAG_LETTERS[f] for f in flags if f in FLAG_LETTERS}
    for kw in keywords:
        if kw in FLAG_LETTERS:
            out.add(FLAG_LETTERS[kw])
        elif kw in keyword_letters:
            out.add(keyword_letters[kw])
    return "".join(sorted(out))


def entry_for(base: str, letters: str | None) -> str:
    """The relative path for a message: new/BASE when letters is None, else cur/BASE:2,..."""
    if letters is None:
        return f"new/{base}"
    return f"cur/{base}{INFO_SEP}{letters}"


def to_crlf(message: bytes) -> bytes:
    """Normalise line ends to CRLF (bare LF and bare CR become CRLF)."""
    if b"\r" not in message:
        return message.replace(b"\n", b"\r\n")
    return message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


# The cache key (see FolderIndex) of `dot_lines()`, recorded by the store at delivery.
CACHE_DOT_LINES = "dot-lines"
# More lines than this starting with "." and nothing is recorded (the reader scans).
MAX_DOT_LINES = 256
_DOT_LINE = re.compile(rb"\n\.")


def dot_lines(message: bytes) -> str | None:
    """Where the lines starting with "." begin in a stored (CRLF) message, for readers that
    send it dot-terminated (a POP3 RETR body, RFC 1939 §3; SMTP DATA, RFC 5321 §4.5.2): the
    file's octets with one "." put before each such offset are its transfer form, so the
    reader sends the file in pieces instead of scanning it.

    "" when there are none (the file is its own transfer form), else the offsets in
    ascending order, space-separated. None when the message does not end with CRLF (its
    transfer form adds one) or has more than MAX_DOT_LINES dot-lines: then nothing is known.
    `re` finds the two-octet pattern about twice as fast as `bytes.find` in text with short
    lines.
    """
    if message and not message.endswith(b"\r\n"):
        return None
    offsets = [m.start() + 1 for m in _DOT_LINE.finditer(message)]
    if message[:1] == b".":
        offsets.insert(0, 0)
    if len(offsets) > MAX_DOT_LINES:
        return None
    return " ".join(map(str, offsets))


def read_file(path: str, expected: int, dir_fd: int | None = None) -> bytes:
    """A whole file in as few system calls as its expected size allows (open, one read,
    close when the size is right; more reads when the file is longer). With `dir_fd`, a
    relative `path` is opened from that directory (a shorter path walk)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        data = os.read(fd, expected + 1)
        if len(data) <= expected:
            return data  # a short read of a regular file is its end
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def crlf_size(path: Path) -> int:
    """The size the message has with CRLF line ends (RFC822.SIZE), reading the file."""
    with open(path, "rb") as fh:
        return len(to_crlf(fh.read()))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSyncer:
    """Group commit for directory fsyncs: concurrent deliveries into one directory share a
    single fsync. A caller's rename is covered by any fsync that *started* after the
    rename, so each caller takes a ticket after its rename and returns as soon as an fsync
    that started at or after that ticket has finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirs: dict[str, list] = {}  # path -> [next ticket, synced ticket, lock]

    def sync(self, path: str) -> None:
        with self._lock:
            state = self._dirs.setdefault(path, [0, 0, threading.Lock()])
            state[0] += 1
            ticket = state[0]
        with state[2]:
            if state[1] >= ticket:
                return  # an fsync that started after our rename has completed
            with self._lock:
                covers = state[0]
            fsync_dir(path)
            state[1] = covers


_dir_syncer = _DirSyncer()


def fsync_dir_shared(path: Path | str) -> None:
    """fsync a directory, sharing the fsync with concurrent callers (see _DirSyncer)."""
    _dir_syncer.sync(str(path))


def write_tmp(folder_dir: Path | str, message: bytes, internal_date: float | None) -> str:
    """Write a message to tmp/ and fsync it; returns the tmp path (the caller renames it
    and sets the internal date on the final file)."""
    tmp = f"{folder_dir}/tmp/{time.time():.6f}.P{os.getpid()}R{secrets.token_hex(6)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileNotFoundError:
        # tmp/ missing (a folder made by another tool, or cleaned by hand): recreate it.
        if not os.path.isdir(folder_dir):
            raise
        os.makedirs(f"{folder_dir}/tmp", mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(message)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def make_maildir(path: Path) -> None:
    """Create a Maildir (cur/new/tmp) with private permissions; idempotent."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # cur/ last: a folder counts as existing once cur/ is there (see MailStore), so a
    # concurrent delivery that sees cur/ also finds tmp/ and new/ (regression:
    # test_concurrent_first_delivery_into_a_new_folder).
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
