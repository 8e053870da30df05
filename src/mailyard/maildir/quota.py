"""Quota usage of one Maildir++ tree: (bytes, messages), cheap to ask on every delivery.

`mailyard-quota` in the Maildir root holds lines of "bytes count": the first is a full
count, every later one a delta appended by a delivery, copy or expunge (one short O_APPEND
write, atomic). `usage()` sums the file (cached on its inode/mtime/size); like Maildir++'s
`maildirsize`, the file is recounted from the message files when it grows past 5120 bytes,
is older than 15 minutes, is missing or unreadable — which also repairs drift caused by
other tools changing the Maildir. Sizes come from `,W=`/`,S=` in file names, else stat.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from mailyard.maildir.files import parse_entry
from mailyard.maildir.names import name_from_dir

QUOTA_FILE = "mailyard-quota"
RECALC_BYTES = 5120
RECALC_AGE = 15 * 60


class QuotaUsage:
    """The usage file of one store (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.path = self.root / QUOTA_FILE
        self._cache: tuple[tuple, tuple[int, int]] | None = None

    def usage(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
            if st.st_size <= RECALC_BYTES and time.time() - st.st_mtime < RECALC_AGE:
                total = self._sum()
                if total is not None:
                    self._cache = (stamp, total)
                    return total
        return self.recount()

    def recount(self) -> tuple[int, int]:
        if not self.root.is_dir():
            return (0, 0)
        dirs = [self.root] + [self.root / e for e in os.listdir(self.root)
                              if name_from_dir(e) is not None]
        total = count_messages(dirs)
        tmp = self.root / f"{QUOTA_FILE}.tmp.{os.getpid()}.{secrets.token_hex(3)}"
        tmp.write_text(f"{total[0]} {total[1]}\n")
        os.replace(tmp, self.path)
        self._cache = None
        return total

    def add(self, size: int, count: int) -> None:
        """Append a delta; without a usage file the next `usage()` counts from the files."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            return
        try:
            os.write(fd, f"{size} {count}\n".encode())
        finally:
            os.close(fd)

    def _sum(self) -> tuple[int, int] | None:
        size = count = 0
        try:
            for line in self.path.read_text().splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                size += int(parts[0])
                count += int(parts[1])
        except (OSError, ValueError):
            return None
        return max(size, 0), max(count, 0)


def count_messages(dirs: Iterable[Path]) -> tuple[int, int]:
    """(bytes, messages) of the message files in new/ and cur/ of each folder directory."""
    size = count = 0
    for folder_dir in dirs:
        for subdir in ("new", "cur"):
            try:
                entries = os.listdir(folder_dir / subdir)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                parsed = parse_entry(subdir, entry)
                if parsed is None:
                    continue
                hint = parsed.vsize_hint or parsed.size_hint
                if hint is None:
                    try:
                        hint = os.stat(folder_dir / subdir / entry).st_size
                    except FileNotFoundError:
                        continue
                size += hint
                count += 1
    return size, count
