"""Find messages to learn or check: .eml files, directories, mbox files and Maildirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

MAX_MESSAGE = 50 << 20


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(5)
    except OSError:
        return False
    return head == b"From "


def iter_messages(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """(label, message bytes) for every message under `paths`; unreadable ones raise OSError."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if is_maildir(path):
                for sub in ("cur", "new"):
                    for file in sorted((path / sub).iterdir()):
                        if file.is_file():
                            yield str(file), file.read_bytes()[:MAX_MESSAGE]
                continue
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.startswith("."):
                        continue
                    yield from iter_messages([os.path.join(root, name)])
        elif is_mbox(path):
            yield from iter_mbox(path)
        else:
            yield str(path), path.read_bytes()[:MAX_MESSAGE]


def iter_mbox(path: Path) -> Iterator[tuple[str, bytes]]:
    """Messages of an mbox file (mboxrd: `>From ` lines are unquoted one level)."""
    current: list[bytes] = []
    index = 0
    with path.open("rb") as fh:
        for line in fh:
            if line.startswith(b"From ") and current is not None:
                if current:
                    index += 1
                    yield f"{path}#{index}", _unquote(current)
                current = []
                continue
            current.append(line)
    if current:
        index += 1
        yield f"{path}#{index}", _unquote(current)


def _unquote(lines: list[bytes]) -> bytes:
    out = []
    for line in lines:
        if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
            line = line[1:]
        out.append(line)
    return b"".join(out)


def count_messages(paths: list[str]) -> int | None:
    """Cheap estimate for the progress bar (None when mbox files make it costly)."""
    total = 0
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            if is_maildir(path):
                total += sum(len(os.listdir(path / s)) for s in ("cur", "new"))
            else:
                total += sum(len([f for f in files if not f.startswith(".")])
                             for _, _, files in os.walk(path))
        elif is_mbox(path):
            with path.open("rb") as fh:
                total += sum(1 for line in fh if line.startswith(b"From "))
        else:
            total += 1
    return total
