"""RAR archives (RAR 4 and RAR 5, read through libarchive): EICAR inside, nesting, the
encrypted flag, and the same limits as every other archive. The archives are built by the
tests from the documented formats (stored members): Debian has no free RAR writer."""

from __future__ import annotations

import struct
import zipfile
import zlib

import pytest
from av_samples import EICAR, message_with, rar4_of, rar5_of, zip_of
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.antivirus import EICAR_NAME, ScanLimits, ScanOptions, VirusEngine
from mailyard.antivirus import verdict as v

RAR = {"rar4": rar4_of, "rar5": rar5_of}


@pytest.fixture(scope="module")
def engine():
    return VirusEngine()


@pytest.mark.parametrize("kind", sorted(RAR))
def test_eicar_in_rar(engine, kind):
    data = RAR[kind]({"readme.txt": b"nothing here\n", "dir/eicar.com": EICAR})
    verdict = engine.scan_bytes(data)
    assert verdict.names == (EICAR_NAME,)
    assert ("dir/eicar.com", 1) in {(a.name, a.depth) for a in verdict.attachments}


@pytest.mark.parametrize("kind", sorted(RAR))
def test_clean_rar_is_clean_and_lists_members(engine, kind):
    verdict = engine.scan_bytes(RAR[kind]({"a.txt": b"hello", "b.bin": b"\0\1\2" * 100}))
    assert not verdict.infected and verdict.limits_exceeded is None
    assert {a.name for a in verdict.attachments} == {"a.txt", "b.bin"}


def test_rar_nested_in_zip_in_rar_as_mail_attachment(engine):
    inner = rar5_of({"eicar.com": EICAR})
    outer = rar4_of({"x.zip": zip_of({"in.rar": inner}, zipfile.ZIP_STORED)})
    verdict = engine.scan_message(message_with(outer, "files.rar"))
    assert verdict.names == (EICAR_NAME,)
    depths = {a.name: a.depth for a in verdict.attachments}
    assert depths["files.rar"] == 1 and depths["eicar.com"] == 4


def test_scan_archive_no_leaves_rar_closed(engine):
    data = rar4_of({"eicar.com": EICAR})
    assert not engine.scan_bytes(data, options=ScanOptions(scan_archives=False)).infected


def test_encrypted_rar_member_is_flagged_not_read(engine):
    verdict = engine.scan_bytes(rar4_of({"eicar.com": EICAR}, encrypted=True))
    assert verdict.encrypted and not verdict.infected
    assert any(a.encrypted and a.name == "eicar.com" for a in verdict.attachments)


# -- limits and hostile archives ---------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(RAR))
def test_rar_with_too_many_files(kind):
    data = RAR[kind]({f"f{i}.txt": b"x" for i in range(30)})
    verdict = VirusEngine(limits=ScanLimits(max_files=10)).scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_FILES


def test_rar_member_over_max_file_size_is_cut():
    data = rar5_of({"big.bin": b"\0" * (3 << 20) + EICAR})
    verdict = VirusEngine(limits=ScanLimits(max_file_size=1 << 20)).scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_FILE_SIZE
    (member,) = [a for a in verdict.attachments if a.name == "big.bin"]
    assert member.size == 1 << 20  # cut at the cap, never the whole member


def test_rar_bomb_of_many_large_members_stops_at_total_bytes():
    data = rar4_of({f"z{i}.bin": b"\0" * (2 << 20) for i in range(12)})
    verdict = VirusEngine(limits=ScanLimits(max_total_bytes=8 << 20)).scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_SCAN_SIZE
    assert verdict.infected and verdict.names == (v.LIMIT_SCAN_SIZE,)


def test_deeply_nested_rar_stops_at_max_depth(engine):
    data = EICAR
    for depth in range(40):
        data = (rar4_of if depth % 2 else rar5_of)({f"level{depth}.rar": data})
    verdict = engine.scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_RECURSION


def test_rar_header_lying_about_sizes_is_harmless(engine):
    """A RAR 4 header that claims 4 GB packed and unpacked, followed by 10 bytes."""
    data = bytearray(rar4_of({"liar.bin": b"0123456789"}))
    at = data.index(b"liar.bin") - 25  # PACK_SIZE, UNP_SIZE start the file header body
    data[at:at + 8] = struct.pack("<II", 0xFFFFFFFF, 0xFFFFFFFF)
    head = at - 7  # the block: HEAD_CRC, HEAD_TYPE, HEAD_FLAGS, HEAD_SIZE, body
    (size,) = struct.unpack_from("<H", data, head + 5)
    struct.pack_into("<H", data, head, zlib.crc32(data[head + 2:head + size]) & 0xFFFF)
    verdict = engine.scan_bytes(bytes(data))
    assert not verdict.infected


@pytest.mark.parametrize("kind", sorted(RAR))
def test_truncated_rar_scans_what_it_can(engine, kind):
    data = RAR[kind]({"eicar.com": EICAR, "second.txt": b"y" * 5000})
    verdict = engine.scan_bytes(data[:-3000])
    assert verdict.names == (EICAR_NAME,)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(RAR)), st.binary(max_size=300), st.integers(0, 400))
def test_fuzz_corrupt_rar_never_raises(kind, junk, cut):
    data = RAR[kind]({"a.txt": b"hello world", "eicar.com": EICAR})
    for sample in (data[:cut] + junk, data[:8] + junk, data[:cut] + junk + data[cut:]):
        verdict = _FUZZ.scan_bytes(sample)
        assert isinstance(verdict.infected, bool)


_FUZZ = VirusEngine()
