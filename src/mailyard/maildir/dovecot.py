"""Reading (and writing) the small files Dovecot keeps in a Maildir folder.

- `dovecot-uidlist`: the UID list. Version 3 header `3 V<uidvalidity> N<next uid> G<guid>`,
  then one line per message: `<uid> [<ext>...] :<base>`; version 1: header
  `1 <uidvalidity> <next uid>`, lines `<uid> <base>`. mailyard imports it once, when a folder
  has no mailyard index yet, so a mailbox copied from Dovecot keeps its UIDs.
- `dovecot-keywords`: `<n> <keyword>` per line; keyword n is info letter chr(ord('a') + n).
  mailyard reads and maintains it, so keyword letters in file names mean the same to both.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

UIDLIST = "dovecot-uidlist"
KEYWORDS = "dovecot-keywords"
MAX_KEYWORD_LETTERS = 26


@dataclass
class UidList:
    """The parsed content of a dovecot-uidlist file."""

    uid_validity: int
    next_uid: int
    uids: dict[str, int] = field(default_factory=dict)  # file base -> uid


def read_uidlist(folder_dir: Path) -> UidList | None:
    """Parse `dovecot-uidlist`; None when absent or unreadable (then UIDs start afresh)."""
    try:
        text = (folder_dir / UIDLIST).read_text("utf-8", errors="replace")
    except OSError:
        return None
    lines = text.splitlines()
    if not lines:
        return None
    header = lines[0].split()
    try:
        if header[0] == "3":
            fields = {h[0]: h[1:] for h in header[1:] if h}
            uid_validity = int(fields.get("V", "0"))
            next_uid = int(fields.get("N", "1"))
        elif header[0] == "1":
            uid_validity, next_uid = int(header[1]), int(header[2])
        else:
            return None
    except (ValueError, IndexError):
        return None
    result = UidList(uid_validity=uid_validity, next_uid=max(next_uid, 1))
    for line in lines[1:]:
        uid_text, _, rest = line.partition(" ")
        if not uid_text.isdigit():
            continue
        if header[0] == "3":
            # Extension fields come first; the base follows the first " :".
            _, colon, base = (" " + rest).partition(" :")
            if not colon:
                continue
        else:
            base = rest.strip()
        if base:
            uid = int(uid_text)
            result.uids[base] = uid
            result.next_uid = max(result.next_uid, uid + 1)
    return result if result.uid_validity > 0 else None


def read_keywords(folder_dir: Path) -> dict[str, str]:
    """letter -> keyword from `dovecot-keywords` ({} when absent)."""
    names: dict[str, str] = {}
    try:
        text = (folder_dir / KEYWORDS).read_text("utf-8", errors="replace")
    except OSError:
        return names
    for line in text.splitlines():
        num, _, name = line.partition(" ")
        if num.isdigit() and int(num) < MAX_KEYWORD_LETTERS and name.strip():
            names[chr(ord("a") + int(num))] = name.strip()
    return names


def write_keywords(folder_dir: Path, names: dict[str, str]) -> None:
    """Replace `dovecot-keywords` atomically (caller holds the folder's write lock)."""
    lines = [f"{ord(letter) - ord('a')} {name}\n" for letter, name in sorted(names.items())]
    tmp = folder_dir / f"{KEYWORDS}.tmp.{os.getpid()}.{secrets.token_hex(3)}"
    tmp.write_text("".join(lines), "utf-8")
    os.replace(tmp, folder_dir / KEYWORDS)


def keywords_stamp(folder_dir: Path):
    try:
        st = os.stat(folder_dir / KEYWORDS)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
