"""What a blob of bytes is, from its first bytes (not its name): the walker's dispatch key
and the `detected_type` of attachments.

`TARGETS` maps a detected type to ClamAV's signature target type number (`.ndb` field 2,
`.ldb` `Target:`), so a target-typed signature only matches the kind of file it is for.
"""

from __future__ import annotations

import re

# ClamAV target types: 1 PE, 2 OLE2, 3 HTML, 4 mail, 5 graphics, 6 ELF, 7 ASCII text,
# 9 Mach-O, 10 PDF, 11 Flash, 12 Java class.
# Text (7) is matched on the normalized copy only (see `normalize_text`), as ClamAV does.
TARGETS = {"pe": 1, "ole2": 2, "html": 3, "mail": 4, "png": 5, "jpeg": 5, "gif": 5,
           "bmp": 5, "elf": 6, "macho": 9, "pdf": 10, "swf": 11, "java": 12}
TARGET_TEXT = 7

ARCHIVES = {"zip", "gzip", "bzip2", "xz", "tar", "7z", "rar"}

# `.ldb` `Container:CL_TYPE_*` → the walker's container kinds, as small codes for YARA.
CONTAINER_CODES = {"zip": 1, "gzip": 2, "bzip2": 3, "xz": 4, "tar": 5, "7z": 6, "mail": 7,
                   "rar": 8}
CLAMAV_CONTAINERS = {"CL_TYPE_ZIP": "zip", "CL_TYPE_GZ": "gzip", "CL_TYPE_BZ": "bzip2",
                     "CL_TYPE_XZ": "xz", "CL_TYPE_POSIX_TAR": "tar", "CL_TYPE_OLD_TAR": "tar",
                     "CL_TYPE_7Z": "7z", "CL_TYPE_MAIL": "mail", "CL_TYPE_RAR": "rar"}

_MAIL_HEADER = re.compile(
    rb"^(?:From |(?:Return-Path|Received|Delivered-To|From|To|Subject|Date|Message-ID|"
    rb"MIME-Version|Content-Type|X-[A-Za-z0-9-]+|Reply-To|Sender|DKIM-Signature|"
    rb"Authentication-Results|ARC-[A-Za-z-]+)\s*:)", re.IGNORECASE)
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:")


def detect(data: bytes) -> str:
    """A short type name: zip, gzip, bzip2, xz, 7z, rar, tar, pe, elf, macho, pdf, ole2, png,
    jpeg, gif, bmp, swf, java, mail, html, text or binary."""
    head = data[:16]
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"BZh") and len(head) > 3 and head[3:4].isdigit():
        return "bzip2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"Rar!\x1a\x07"):
        return "rar"
    if head.startswith(b"MZ"):
        return "pe" if _is_pe(data) else "binary"
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe",
                    b"\xcf\xfa\xed\xfe"):
        return "macho"
    if head[:4] == b"\xca\xfe\xba\xbe":
        return "java"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole2"
    if head.startswith(b"\x89PNG"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"GIF8"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:3] in (b"FWS", b"CWS", b"ZWS"):
        return "swf"
    if len(data) >= 512 and data[257:262] == b"ustar":
        return "tar"
    if is_mail(data):
        return "mail"
    lowered = data[:1024].lower()
    if b"<html" in lowered or b"<!doctype html" in lowered or b"<body" in lowered:
        return "html"
    sample = data[:4096]
    if sample and not sample.translate(None, _TEXT_BYTES):
        return "text"
    return "binary"


_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\x1b" + bytes(range(128, 256))


def _is_pe(data: bytes) -> bool:
    if len(data) < 0x40:
        return False
    offset = int.from_bytes(data[0x3C:0x40], "little")
    return data[offset:offset + 4] == b"PE\x00\x00"


def is_mail(data: bytes) -> bool:
    """An RFC 5322 message: known header names up front, header lines until a blank line."""
    if not _MAIL_HEADER.match(data[:256]):
        return False
    lines = data[:4096].split(b"\n", 8)[:8]
    known = 0
    for line in lines:
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        if not (_HEADER_LINE.match(line) or line.startswith(b"From ")):
            return False
        known += bool(_MAIL_HEADER.match(line))
    return known >= 1


_WHITESPACE = b" \t\n\r\v\f"
_NORMALIZE = bytes(
    0x20 if c in _WHITESPACE else c + 32 if 0x41 <= c <= 0x5A else c for c in range(256))
_CONTROL = bytes(c for c in range(32) if c not in _WHITESPACE)
_SPACES = re.compile(rb" {2,}")


def normalize_text(data: bytes) -> bytes:
    """ClamAV's normalized form of a text file, which its text signatures (target 7) and
    also the untargeted ones are matched against: ASCII letters lowered, control characters
    dropped, every run of white space made one space."""
    return _SPACES.sub(b" ", data.translate(_NORMALIZE, _CONTROL))


def pe_sections(data: bytes) -> list[tuple[int, int]]:
    """(file offset, size) of each PE section's raw data that lies within the file."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return []
    pe = int.from_bytes(data[0x3C:0x40], "little")
    if data[pe:pe + 4] != b"PE\x00\x00" or len(data) < pe + 24:
        return []
    count = int.from_bytes(data[pe + 6:pe + 8], "little")
    optional_size = int.from_bytes(data[pe + 20:pe + 22], "little")
    table = pe + 24 + optional_size
    out = []
    for i in range(min(count, 96)):
        header = data[table + 40 * i:table + 40 * (i + 1)]
        if len(header) < 40:
            break
        raw_size = int.from_bytes(header[16:20], "little")
        raw_start = int.from_bytes(header[20:24], "little")
        if raw_size and raw_start + raw_size <= len(data):
            out.append((raw_start, raw_size))
    return out
