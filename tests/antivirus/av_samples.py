"""Sample builders for the antivirus tests: EICAR in containers, mail, PE files, databases.

Everything is generated here; no third-party signature or malware file is committed.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import lzma
import quopri
import struct
import tarfile
import zipfile
import zlib
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from mailyard.antivirus import EICAR


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def bz(data: bytes) -> bytes:
    return bz2.compress(data)


def xz(data: bytes) -> bytes:
    return lzma.compress(data)


def seven_zip_of(members: dict[str, bytes], password: str | None = None) -> bytes:
    import py7zr

    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password) as archive:
        if password:
            archive.set_encrypted_header(False)
        for name, data in members.items():
            archive.writestr(data, name)
    return buf.getvalue()


def encrypted_zip(name: str, data: bytes) -> bytes:
    """A zip whose member has the 'encrypted' flag (traditional PKWARE) — content opaque."""
    raw = zip_of({name: data}, zipfile.ZIP_STORED)
    # Set bit 0 of the general-purpose flags in the local and the central header.
    out = bytearray(raw)
    local = out.find(b"PK\x03\x04")
    central = out.find(b"PK\x01\x02")
    out[local + 6] |= 1
    out[central + 8] |= 1
    return bytes(out)


def message_with(attachment: bytes, filename: str = "file.bin", encoding: str = "base64",
                 subject: str = "test") -> bytes:
    """A multipart message with one attachment in the given transfer encoding."""
    if encoding == "base64":
        part = (f"Content-Type: application/octet-stream; name=\"{filename}\"\r\n"
                f"Content-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n"
                ).encode() + base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    elif encoding == "quoted-printable":
        part = (f"Content-Type: text/plain; name=\"{filename}\"\r\n"
                f"Content-Transfer-Encoding: quoted-printable\r\n"
                f"Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n"
                ).encode() + quopri.encodestring(attachment, quotetabs=True)
    elif encoding == "x-uuencode":
        part = (f"Content-Type: application/octet-stream; name=\"{filename}\"\r\n"
                f"Content-Transfer-Encoding: x-uuencode\r\n\r\n").encode() + uuencode(
                    attachment, filename)
    else:
        raise ValueError(encoding)
    return (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: " + subject.encode()
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUND\"\r\n"
            b"\r\nPreamble\r\n--BOUND\r\nContent-Type: text/plain\r\n\r\nHello.\r\n"
            b"--BOUND\r\n" + part + b"\r\n--BOUND--\r\n")


def uuencode(data: bytes, filename: str) -> bytes:
    import binascii

    lines = [f"begin 644 {filename}".encode()]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]).rstrip(b"\n"))
    lines += [b"`", b"end"]
    return b"\r\n".join(lines) + b"\r\n"


def inline_uuencoded_message(data: bytes, filename: str) -> bytes:
    """An old-style plain text message with a uuencoded block in the body."""
    return (b"From: a@example.test\r\nTo: b@example.test\r\nSubject: uu\r\n\r\n"
            b"See the file below.\r\n\r\n" + uuencode(data, filename) + b"\r\nBye.\r\n")


def forwarded(inner: bytes) -> bytes:
    """A message carrying `inner` as a message/rfc822 attachment."""
    return (b"From: c@example.test\r\nTo: d@example.test\r\nSubject: fwd\r\nMIME-Version: 1.0"
            b"\r\nContent-Type: multipart/mixed; boundary=\"OUTER\"\r\n\r\n--OUTER\r\n"
            b"Content-Type: text/plain\r\n\r\nForwarded.\r\n--OUTER\r\n"
            b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--OUTER--\r\n")


def minimal_pe(code: bytes, sections: int = 2) -> bytes:
    """A small, valid PE32 file: code at the entry point (file offset 0x200), `sections`
    sections of 0x200 bytes each, the first holding `code`."""
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, sections, 0, 0, 0, 0xE0, 0x0102)
    optional = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", optional, 0, 0x10B, 14, 0, 0x200 * sections, 0, 0,
                     0x1000, 0x1000, 0x1000)  # magic..AddressOfEntryPoint, BaseOfCode/Data
    struct.pack_into("<III", optional, 28, 0x400000, 0x1000, 0x200)  # ImageBase, aligns
    struct.pack_into("<HHHHHH", optional, 40, 4, 0, 0, 0, 4, 0)
    struct.pack_into("<II", optional, 56, 0x1000 * (sections + 1), 0x200)  # image, headers
    struct.pack_into("<H", optional, 68, 2)  # subsystem GUI
    struct.pack_into("<I", optional, 92, 16)  # NumberOfRvaAndSizes
    table = b""
    for i in range(sections):
        table += struct.pack("<8sIIIIIIHHI", f".s{i}".encode(), 0x200, 0x1000 * (i + 1),
                             0x200, 0x200 * (i + 1), 0, 0, 0, 0, 0x60000020)
    header = bytes(dos) + coff + bytes(optional) + table
    header += b"\0" * (0x200 - len(header))
    body = b""
    for i in range(sections):
        chunk = code if i == 0 else f"section {i} data ".encode() * 4
        body += chunk[:0x200] + b"\0" * (0x200 - len(chunk[:0x200]))
    return header + body


def write_db(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def make_cvd(path: Path, files: dict[str, str], md5: str | None = None) -> Path:
    """An official-style container: a 512-byte ClamAV-VDB header, then a tar.gz."""
    import hashlib

    payload = gz(tar_of({name: text.encode() for name, text in files.items()}))
    md5 = md5 or hashlib.md5(payload).hexdigest()
    header = b"ClamAV-VDB:25 Nov 2026 12-00 +0000:1:%d:90:%s:x:mailyard:0" % (
        len(files), md5.encode())
    path.write_bytes(header.ljust(512, b" ") + payload)
    return path


__all__ = ["EICAR", "MIMEApplication", "MIMEMultipart", "MIMEText"]


def minimal_elf(code: bytes, entry_skip: int = 0) -> bytes:
    """A small ELF64 executable: one PT_LOAD segment, `code` at file offset 120, entry
    point `entry_skip` bytes into it."""
    size = 120 + len(code)
    header = struct.pack("<4sBBBB8sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, b"\0" * 8, 2, 0x3E,
                         1, 0x400000 + 120 + entry_skip, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    segment = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, size, size, 0x1000)
    return header + segment + code


# -- RAR: no free tool writes RAR (Debian has only readers: unar, libarchive), so the tests
# build stored (method 0) archives from the documented formats (RAR 4's technote.txt, and
# the "RAR 5.0 archive format" technote).
def _rar4_block(head_type: int, flags: int, body: bytes) -> bytes:
    rest = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def rar4_of(members: dict[str, bytes], encrypted: bool = False) -> bytes:
    """A RAR 4 archive of stored members (flag 0x04 marks them encrypted)."""
    out = b"Rar!\x1a\x07\x00" + _rar4_block(0x73, 0, b"\0" * 6)
    for name, data in members.items():
        raw_name = name.encode()
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 3, zlib.crc32(data),
                           0x5A000000, 29, 0x30, len(raw_name), 0o100644) + raw_name
        if encrypted:
            body += b"\0" * 8  # salt
        out += _rar4_block(0x74, 0x8000 | (0x04 if encrypted else 0), body) + data
    return out + _rar4_block(0x7B, 0x4000, b"")


def _vint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _rar5_header(fields: bytes) -> bytes:
    sized = _vint(len(fields)) + fields
    return struct.pack("<I", zlib.crc32(sized)) + sized


def rar5_of(members: dict[str, bytes]) -> bytes:
    """A RAR 5 archive of stored members."""
    out = b"Rar!\x1a\x07\x01\x00" + _rar5_header(_vint(1) + _vint(0) + _vint(0))
    for name, data in members.items():
        raw_name = name.encode()
        fields = (_vint(2) + _vint(0x0002) + _vint(len(data))  # file header, data follows
                  + _vint(0x0004) + _vint(len(data)) + _vint(0o100644)  # CRC32 present
                  + struct.pack("<I", zlib.crc32(data))
                  + _vint(0) + _vint(1) + _vint(len(raw_name)) + raw_name)  # store, Unix
        out += _rar5_header(fields) + data
    return out + _rar5_header(_vint(5) + _vint(0) + _vint(0))
