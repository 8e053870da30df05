"""EICAR in every wrapping a message can have, attachments seen, and hostile containers."""

from __future__ import annotations

import zipfile

import pytest
from av_samples import (
    EICAR,
    bz,
    encrypted_zip,
    forwarded,
    gz,
    inline_uuencoded_message,
    message_with,
    seven_zip_of,
    tar_of,
    xz,
    zip_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.antivirus import EICAR_NAME, ScanLimits, ScanOptions, VirusEngine
from mailyard.antivirus import verdict as v


@pytest.fixture(scope="module")
def engine():
    return VirusEngine()


WRAPPINGS = {
    "plain": lambda: EICAR,
    "plain_with_newline": lambda: EICAR + b"\r\n",
    "zip": lambda: zip_of({"eicar.com": EICAR}),
    "zip_stored": lambda: zip_of({"eicar.com": EICAR}, zipfile.ZIP_STORED),
    "zip_in_zip": lambda: zip_of({"inner.zip": zip_of({"eicar.com": EICAR})}),
    "tar_gz": lambda: gz(tar_of({"dir/eicar.com": EICAR})),
    "tar_bz2": lambda: bz(tar_of({"eicar.com": EICAR})),
    "xz": lambda: xz(EICAR),
    "7z": lambda: seven_zip_of({"eicar.com": EICAR}),
    "gzip_multi_member": lambda: gz(EICAR[:30]) + gz(EICAR[30:]),
}


@pytest.mark.parametrize("wrapping", sorted(WRAPPINGS))
def test_eicar_found_in_file(engine, wrapping):
    verdict = engine.scan_bytes(WRAPPINGS[wrapping]())
    assert verdict.infected and verdict.names == (EICAR_NAME,)


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "x-uuencode"])
def test_eicar_found_in_attachment(engine, encoding):
    verdict = engine.scan_message(message_with(EICAR, "eicar.com", encoding))
    assert verdict.names == (EICAR_NAME,)


def test_eicar_in_inline_uuencoded_body(engine):
    assert engine.scan_message(inline_uuencoded_message(EICAR, "e.com")).names == (EICAR_NAME,)


def test_eicar_zipped_in_forwarded_message(engine):
    inner = message_with(zip_of({"a/b/eicar.com": EICAR}), "x.zip")
    verdict = engine.scan_message(forwarded(inner))
    assert verdict.names == (EICAR_NAME,)


def test_clean_message_is_clean_and_lists_attachments(engine):
    archive = zip_of({"report.pdf": b"%PDF-1.4 harmless", "tool.exe": b"MZ" + b"\0" * 200})
    verdict = engine.scan_message(message_with(archive, "docs.zip"))
    assert not verdict.infected and verdict.names == () and verdict.limits_exceeded is None
    seen = {(a.name, a.detected_type, a.depth) for a in verdict.attachments}
    assert ("docs.zip", "zip", 1) in seen
    assert ("report.pdf", "pdf", 2) in seen
    assert ("tool.exe", "binary", 2) in seen


def test_attachment_type_comes_from_content_not_name(engine):
    from av_samples import minimal_pe

    verdict = engine.scan_message(message_with(minimal_pe(b"\x90" * 16), "invoice.pdf"))
    (attachment,) = [a for a in verdict.attachments if a.name == "invoice.pdf"]
    assert attachment.detected_type == "pe"


def test_encrypted_zip_is_flagged_not_infected(engine):
    verdict = engine.scan_message(message_with(encrypted_zip("eicar.com", EICAR), "s.zip"))
    assert verdict.encrypted and not verdict.infected
    assert any(a.encrypted and a.name == "eicar.com" for a in verdict.attachments)


def test_encrypted_7z_is_flagged(engine):
    verdict = engine.scan_bytes(seven_zip_of({"eicar.com": EICAR}, password="secret"))
    assert verdict.encrypted and not verdict.infected


def test_scan_archive_no_and_scan_mail_no(engine):
    assert not engine.scan_bytes(zip_of({"e.com": EICAR}),
                                 options=ScanOptions(scan_archives=False)).infected
    assert not engine.scan_bytes(message_with(EICAR, "e.com"),
                                 options=ScanOptions(scan_mail=False)).infected


def test_allmatch_reports_every_name(tmp_path):
    (tmp_path / "m.ndb").write_text("A.One:0:*:6f6e652d6d61726b\nA.Two:0:*:74776f2d6d61726b\n")
    engine = VirusEngine(tmp_path)
    data = zip_of({"1": b"one-mark", "2": b"two-mark"})
    assert len(engine.scan_bytes(data).names) == 1
    assert set(engine.scan_bytes(data, options=ScanOptions(allmatch=True)).names) == {
        "A.One.UNOFFICIAL", "A.Two.UNOFFICIAL"}


# -- hostile input ---------------------------------------------------------------------------

def test_zip_bomb_stops_at_ratio_limit(engine):
    bomb = zip_of({"zeros.bin": b"\0" * (40 * 1024 * 1024)})  # ~40 KB packed, ratio ~1000
    verdict = engine.scan_bytes(bomb)
    assert verdict.limits_exceeded == v.LIMIT_RATIO
    assert verdict.infected and verdict.names == (v.LIMIT_RATIO,)


def test_zip_bomb_passes_when_policy_is_pass():
    engine = VirusEngine(limits=ScanLimits(alert_exceeded=False))
    verdict = engine.scan_bytes(zip_of({"zeros.bin": b"\0" * (8 * 1024 * 1024)}))
    assert verdict.limits_exceeded == v.LIMIT_RATIO and not verdict.infected


def test_gzip_bomb_is_capped_not_expanded():
    engine = VirusEngine(limits=ScanLimits(max_file_size=1 << 20, max_ratio=1e9))
    verdict = engine.scan_bytes(gz(b"\0" * (64 * 1024 * 1024)))
    assert verdict.limits_exceeded == v.LIMIT_FILE_SIZE


def test_layered_bomb_stops_at_total_bytes():
    """42.zip-style: 16 copies per layer, 3 layers of 2 MB each (96 MB unpacked)."""
    layer = zip_of({"z.bin": b"\0" * (2 * 1024 * 1024)})
    for depth in range(3):
        layer = zip_of({f"{depth}-{i}.zip": layer for i in range(16)})
    engine = VirusEngine(limits=ScanLimits(max_total_bytes=20 * 1024 * 1024, max_ratio=1e9))
    verdict = engine.scan_bytes(layer)
    assert verdict.limits_exceeded == v.LIMIT_SCAN_SIZE


def test_deeply_nested_zip_stops_at_max_depth(engine):
    data = EICAR
    for depth in range(40):
        data = zip_of({f"level{depth}.zip": data}, zipfile.ZIP_STORED)
    verdict = engine.scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_RECURSION


def test_recursive_zip_quine_terminates(engine):
    """A zip whose member is the zip itself (as far as a non-quine can be): the same
    archive bytes nested without end is cut by the depth limit, and an archive listing
    itself twice per level is cut by the file and byte limits."""
    data = zip_of({"self.zip": b"PK\x03\x04"})
    for _ in range(30):
        data = zip_of({"self.zip": data, "again.zip": data}, zipfile.ZIP_STORED)
        if len(data) > 4 * 1024 * 1024:
            break
    verdict = VirusEngine(limits=ScanLimits(max_files=50, max_total_bytes=16 << 20)).scan_bytes(
        data)
    assert verdict.limits_exceeded is not None


def test_too_many_files(tmp_path):
    data = zip_of({f"f{i}.txt": b"x" for i in range(30)})
    verdict = VirusEngine(limits=ScanLimits(max_files=10)).scan_bytes(data)
    assert verdict.limits_exceeded == v.LIMIT_FILES


@pytest.mark.parametrize("garbage", [
    b"PK\x03\x04" + b"\xff" * 100,
    b"\x1f\x8b" + b"\x00" * 50,
    b"BZh9" + b"junk" * 20,
    b"\xfd7zXZ\x00" + b"junk" * 20,
    b"7z\xbc\xaf\x27\x1c" + b"\x00" * 40,
    (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
     b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"),
    b"From: a\r\nContent-Type: message/rfc822\r\n\r\nFrom: b\r\n",
])
def test_corrupt_containers_are_clean_not_errors(engine, garbage):
    verdict = engine.scan_bytes(garbage)
    assert not verdict.infected


def test_large_message_with_virus_after_a_big_attachment(engine):
    big = bytes(range(256)) * (22 * 1024 * 1024 // 256)  # 22 MB → ~30 MB base64
    message = message_with(big, "big.bin")
    message = message.replace(b"--BOUND--\r\n", b"--BOUND\r\nContent-Type: application/zip; "
                              b"name=\"e.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                              + __import__("base64").encodebytes(zip_of({"e.com": EICAR}))
                              + b"\r\n--BOUND--\r\n")
    assert len(message) > 30 * 1000 * 1000
    verdict = engine.scan_message(message)
    assert verdict.names == (EICAR_NAME,)
    assert any(a.name == "big.bin" and a.size == len(big) for a in verdict.attachments)


def test_scan_time_limit_yields_verdict():
    engine = VirusEngine(limits=ScanLimits(max_scan_time=0.0))
    verdict = engine.scan_bytes(zip_of({"a": b"x"}))
    assert verdict.limits_exceeded == v.LIMIT_SCAN_TIME


_MAGICS = [b"", b"PK\x03\x04", b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c",
           b"MZ", b"From: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
           b"begin 644 x\n"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(_MAGICS), st.binary(max_size=600))
def test_fuzz_engine_never_raises(magic, tail):
    verdict = _FUZZ_ENGINE.scan_bytes(magic + tail)
    assert isinstance(verdict.infected, bool)
    _FUZZ_ENGINE.scan_message(magic + tail)


_FUZZ_ENGINE = VirusEngine()


def test_pathological_signatures_hit_the_scan_time_limit(tmp_path):
    """Signatures of short anchors and unbounded jumps over a file of zeros make the matcher
    quadratic; the scan must end with MaxScanTime, not hang (YARA-X timeout)."""
    (tmp_path / "slow.ndb").write_text(
        "".join(f"Slow.{i}:0:*:0000*0000*0000*01{i:02x}\n" for i in range(50)))
    engine = VirusEngine(tmp_path, ScanLimits(max_scan_time=1.0))
    verdict = engine.scan_bytes(b"\0" * (3 << 20))
    assert verdict.limits_exceeded == v.LIMIT_SCAN_TIME


def test_thousands_of_nested_multiparts_is_a_recursion_limit_not_a_crash(engine):
    """Regression: the stdlib MIME parser recursed until RecursionError escaped the engine."""
    levels = 3000
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                    for i in range(levels))
    body += b"--b%d\r\nContent-Type: text/plain\r\n\r\nhi\r\n" % levels
    body += b"".join(b"--b%d--\r\n" % i for i in range(levels, -1, -1))
    message = (b"From: a@example.test\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + body)
    verdict = engine.scan_message(message)
    assert verdict.limits_exceeded == v.LIMIT_RECURSION
