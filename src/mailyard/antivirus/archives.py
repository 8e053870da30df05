"""Unpacking containers with hard caps: zip, tar, gzip, bzip2, xz, 7z and rar.

Theory of operation: every unpacker is a generator of `Member`s drawing on one shared
`Budget`. Decompression is streamed (`max_length` on each decompressor call), so a member
never grows past what the budget allows: at most `min(max_file_size, bytes left in the scan,
packed size × max_ratio)` bytes plus one. Going over a cap stops that member, records the
limit (a `Heuristics.Limits.Exceeded.*` name) and yields the truncated prefix, which is
still scanned, the way ClamAV scans up to its limits. Bombs therefore cost bounded memory
and time; a corrupt archive yields what could be read, then stops quietly.
"""

from __future__ import annotations

import bz2
import ctypes
import io
import lzma
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass

from mailyard.antivirus import verdict as v

CHUNK = 1 << 16
# Below this many unpacked bytes the ratio limit does not apply: small, highly repetitive
# files (a page of zeros) are normal.
RATIO_FLOOR = 1 << 20


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes
    encrypted: bool = False


class LimitHit(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class Budget:
    """What is left of one scan's limits; shared by all unpackers of the scan."""

    def __init__(self, limits: v.ScanLimits):
        self.limits = limits
        self.remaining = limits.max_total_bytes
        self.deadline = time.monotonic() + limits.max_scan_time
        self.hit: str | None = None

    def record(self, name: str) -> None:
        if self.hit is None:
            self.hit = name

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            self.record(v.LIMIT_SCAN_TIME)
            raise LimitHit(v.LIMIT_SCAN_TIME)

    def cap_for(self, packed_size: int) -> tuple[int, str]:
        """Largest allowed size of one member and the limit that sets it."""
        caps = [(self.limits.max_file_size, v.LIMIT_FILE_SIZE),
                (max(self.remaining, 0), v.LIMIT_SCAN_SIZE)]
        if packed_size > 0:
            caps.append((max(int(packed_size * self.limits.max_ratio), RATIO_FLOOR),
                         v.LIMIT_RATIO))
        return min(caps)

    def take(self, size: int) -> None:
        self.remaining -= size


def _finish(budget: Budget, out: bytearray, cap: int, why: str) -> bytes:
    if len(out) > cap:
        budget.record(why)
        del out[cap:]
    budget.take(len(out))
    return bytes(out)


def gunzip(data: bytes, budget: Budget) -> bytes:
    """All members of a gzip stream, capped."""
    cap, why = budget.cap_for(len(data))
    out = bytearray()
    rest = data
    while rest[:2] == b"\x1f\x8b" and len(out) <= cap:
        d = zlib.decompressobj(wbits=31)
        pos = 0
        try:
            while len(out) <= cap and not d.eof:
                budget.check_time()
                if d.unconsumed_tail:
                    chunk = d.unconsumed_tail
                elif pos < len(rest):
                    chunk = rest[pos:pos + CHUNK]
                    pos += CHUNK
                else:
                    break
                out += d.decompress(chunk, cap + 1 - len(out))
        except zlib.error:
            break
        if not d.eof:
            break
        rest = d.unused_data + rest[pos:]
    return _finish(budget, out, cap, why)


def _stream(decompressor, data: bytes, budget: Budget) -> bytes:
    """bz2/lzma decompressors (same API), capped."""
    cap, why = budget.cap_for(len(data))
    out = bytearray()
    pos = 0
    try:
        while len(out) <= cap and not decompressor.eof:
            budget.check_time()
            if decompressor.needs_input:
                if pos >= len(data):
                    break
                chunk = data[pos:pos + CHUNK]
                pos += CHUNK
            else:
                chunk = b""
            out += decompressor.decompress(chunk, cap + 1 - len(out))
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        pass
    return _finish(budget, out, cap, why)


def bunzip2(data: bytes, budget: Budget) -> bytes:
    return _stream(bz2.BZ2Decompressor(), data, budget)


def unxz(data: bytes, budget: Budget) -> bytes:
    return _stream(lzma.LZMADecompressor(), data, budget)


def _read_capped(stream, packed_size: int, budget: Budget) -> bytes:
    cap, why = budget.cap_for(packed_size)
    out = bytearray()
    while len(out) <= cap:
        budget.check_time()
        chunk = stream.read(min(CHUNK, cap + 1 - len(out)))
        if not chunk:
            break
        out += chunk
    return _finish(budget, out, cap, why)


def unzip(data: bytes, budget: Budget):
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return
    with archive:
        for count, info in enumerate(archive.infolist()):
            if count >= budget.limits.max_files:
                budget.record(v.LIMIT_FILES)
                return
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                yield Member(info.filename, b"", encrypted=True)
                continue
            try:
                with archive.open(info) as stream:
                    content = _read_capped(stream, info.compress_size, budget)
            except (zipfile.BadZipFile, NotImplementedError, zlib.error, OSError, EOFError,
                    ValueError, lzma.LZMAError, RuntimeError):
                continue
            yield Member(info.filename, content)


def untar(data: bytes, budget: Budget):
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:")  # noqa: SIM115
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return
    with archive:
        count = 0
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, OSError, ValueError, EOFError):
                return
            if info is None:
                return
            if not info.isfile():
                continue
            count += 1
            if count > budget.limits.max_files:
                budget.record(v.LIMIT_FILES)
                return
            stream = archive.extractfile(info)
            if stream is None:
                continue
            yield Member(info.name, _read_capped(stream, 0, budget))


class _CappedWriter:
    """py7zr output for one member: raises once past the cap, so extraction stops."""

    def __init__(self, cap: int):
        self.cap = cap
        self.buffer = bytearray()

    def write(self, chunk) -> int:
        self.buffer += chunk
        if len(self.buffer) > self.cap:
            raise LimitHit("cap")
        return len(chunk)

    def read(self, size=None):
        return b""

    def seek(self, offset, whence=0):
        return 0

    def flush(self):
        pass

    def size(self):
        return len(self.buffer)


def un7z(data: bytes, budget: Budget):
    try:
        import py7zr
        from py7zr.io import WriterFactory
    except ImportError:  # pragma: no cover - py7zr is a dependency
        return
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except Exception:  # noqa: BLE001 - py7zr raises many kinds on corrupt input
        return
    with archive:
        try:
            if archive.needs_password():
                for name in archive.getnames():
                    yield Member(name, b"", encrypted=True)
                return
            infos = [i for i in archive.list() if not i.is_directory]
        except Exception:  # noqa: BLE001 - as above: corrupt input, nothing to unpack
            return
        if len(infos) > budget.limits.max_files:
            budget.record(v.LIMIT_FILES)
            infos = infos[:budget.limits.max_files]
        cap, why = budget.cap_for(len(data))
        writers: dict[str, _CappedWriter] = {}

        class Factory(WriterFactory):
            def create(self, filename):
                writers[filename] = _CappedWriter(cap)
                return writers[filename]

        try:
            archive.extract(targets=[i.filename for i in infos], factory=Factory())
        except LimitHit:
            budget.record(why)
        except Exception:  # noqa: BLE001, S110 - corrupt: scan what was written so far
            pass
        for name, writer in writers.items():
            out = writer.buffer
            yield Member(name, _finish(budget, out, cap, why))


def unrar(data: bytes, budget: Budget):
    """RAR 4 and RAR 5 through libarchive (libarchive-c over Debian's libarchive13), read
    from memory, one block at a time, under the same caps as every other archive."""
    try:
        import libarchive
        from libarchive import ffi
    except (ImportError, OSError, AttributeError):  # pragma: no cover - libarchive missing
        return
    is_encrypted = _libarchive_is_encrypted(ffi)
    fmt = "rar5" if data[6:8] == b"\x01\x00" else "rar"
    cap, why = budget.cap_for(len(data))
    count = 0
    try:
        with libarchive.memory_reader(data, format_name=fmt, filter_name="none") as archive:
            for entry in archive:
                # Not `isfile`: a crafted header may give a member no file type at all.
                if entry.isdir or entry.issym or entry.islnk:
                    continue
                count += 1
                if count > budget.limits.max_files:
                    budget.record(v.LIMIT_FILES)
                    return
                name = entry.pathname or ""
                if is_encrypted is not None and is_encrypted(entry._entry_p):
                    yield Member(name, b"", encrypted=True)
                    continue
                out = bytearray()
                try:
                    for block in entry.get_blocks(CHUNK):
                        budget.check_time()
                        out += block
                        if len(out) > cap:
                            break
                except libarchive.ArchiveError:
                    pass  # corrupt or unsupported: scan what was read
                yield Member(name, _finish(budget, out, cap, why))
                cap, why = budget.cap_for(len(data))
    except libarchive.ArchiveError:
        return


def _libarchive_is_encrypted(ffi):
    try:
        return ffi.ffi("entry_is_encrypted", [ffi.c_archive_entry_p], ctypes.c_int)
    except AttributeError:  # pragma: no cover - libarchive older than 3.2
        return None


UNPACKERS = {"zip": unzip, "tar": untar, "7z": un7z, "rar": unrar}
DECOMPRESSORS = {"gzip": gunzip, "bzip2": bunzip2, "xz": unxz}
