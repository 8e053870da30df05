"""Folder names: modified UTF-7 (RFC 3501 §5.1.3), validation, and the Maildir++ mapping.

The store's API takes and returns folder names as Unicode strings with "." as the hierarchy
delimiter, exactly as an IMAP server shows them after decoding modified UTF-7 (for example
"Work.Projects" or "Entwürfe"). INBOX is the Maildir root; every other folder "A.B" lives in
the directory `.A.B` under the root, the name encoded in modified UTF-7 (Maildir++, and what
Dovecot writes). A name is refused with `FolderNameError` when it could escape the root or
confuse the layout: empty, empty hierarchy levels ("a..b", ".a", "a."), "/" or "\\", NUL or
any control character, the LIST wildcards "*" and "%", more than MAX_DEPTH levels, or longer
than MAX_NAME_CHARS characters / MAX_DIR_BYTES bytes once encoded.
"""

from __future__ import annotations

import base64

from mailyard.maildir.errors import FolderNameError

DELIMITER = "."
INBOX = "INBOX"
MAX_NAME_CHARS = 200
MAX_DIR_BYTES = 240  # NAME_MAX is 255 on Linux filesystems; leave room for temp suffixes
MAX_DEPTH = 16

_FORBIDDEN = set("/\\*%") | {chr(c) for c in range(0x20)} | {"\x7f"}


# -- modified UTF-7 -----------------------------------------------------------------------

def encode_mutf7(name: str) -> str:
    """Encode a Unicode folder name in IMAP modified UTF-7 (RFC 3501 §5.1.3)."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mutf7(text: str) -> str:
    """Decode IMAP modified UTF-7; raises FolderNameError on malformed input."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ord(ch) < 0x20 or ord(ch) > 0x7E:
            raise FolderNameError(f"modified UTF-7 name contains a raw non-ASCII byte: {text!r}")
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise FolderNameError(f"unterminated modified UTF-7 shift in {text!r}")
        chunk = text[i + 1:end]
        i = end + 1
        if chunk == "":
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        try:
            raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
            decoded = raw.decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            raise FolderNameError(f"bad modified UTF-7 sequence in {text!r}") from None
        # RFC 3501: the shifted run must encode characters that need shifting.
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise FolderNameError(f"non-canonical modified UTF-7 in {text!r}")
        out.append(decoded)
    return "".join(out)


# -- validation ------------------------------------------------------------------------------

def normalize(name: str) -> str:
    """Validate a folder name and return its canonical form ("inbox" -> "INBOX").

    Raises FolderNameError with a message that says what is wrong.
    """
    if not isinstance(name, str):
        raise FolderNameError(f"folder name must be text, got {type(name).__name__}")
    if name == "":
        raise FolderNameError("folder name is empty")
    if len(name) > MAX_NAME_CHARS:
        raise FolderNameError(f"folder name is longer than {MAX_NAME_CHARS} characters")
    bad = _FORBIDDEN.intersection(name)
    if bad:
        shown = ", ".join(repr(c) for c in sorted(bad))
        raise FolderNameError(f"folder name {name!r} contains forbidden characters: {shown}")
    parts = name.split(DELIMITER)
    if any(p == "" for p in parts):
        raise FolderNameError(f"folder name {name!r} has an empty hierarchy level "
                              f"(leading, trailing or doubled {DELIMITER!r})")
    if len(parts) > MAX_DEPTH:
        raise FolderNameError(f"folder name {name!r} is nested deeper than {MAX_DEPTH} levels")
    if any(p.strip() == "" for p in parts):
        raise FolderNameError(f"folder name {name!r} has a blank hierarchy level")
    if parts[0].upper() == INBOX:
        parts[0] = INBOX
    canonical = DELIMITER.join(parts)
    if canonical != INBOX and len(dir_name(canonical).encode()) > MAX_DIR_BYTES:
        raise FolderNameError(f"folder name {name!r} is too long once encoded")
    return canonical


def dir_name(canonical: str) -> str:
    """The Maildir++ directory name for a canonical non-INBOX folder name."""
    return "." + encode_mutf7(canonical)


def name_from_dir(entry: str) -> str | None:
    """The folder name for a `.Name` directory entry, or None if it is not a valid folder."""
    if not entry.startswith(".") or entry in (".", ".."):
        return None
    try:
        name = decode_mutf7(entry[1:])
        canonical = normalize(name)
    except FolderNameError:
        return None
    if canonical == INBOX:
        return None
    return canonical


def parent_names(canonical: str) -> list[str]:
    """All ancestors of a name, nearest last: "a.b.c" -> ["a", "a.b"]."""
    parts = canonical.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]
