"""Differential: Debian's clamscan and `mailyard scan` on the same files and databases must
report the same verdicts and the same names.

(No .cvd here: clamscan insists on ClamAV's digital signature, which a generated container
cannot have; test_database covers our .cvd loading.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from av_samples import (
    EICAR,
    bz,
    forwarded,
    gz,
    inline_uuencoded_message,
    message_with,
    seven_zip_of,
    tar_of,
    write_db,
    xz,
    zip_of,
)
from sigcases import CASES, database_files

pytestmark = pytest.mark.skipif(shutil.which("clamscan") is None,
                                reason="clamscan is not installed (tests/debian-packages.txt)")

MARK = b"differential-marker-payload"
MARK_NDB = "Diff.Marker:0:*:" + MARK.hex() + "\n"
HASHED = b"differential hashed file content\n"
ZIPPED = b"only-counts-inside-a-zip"
MAILED = b"only-counts-inside-a-mail"


def _containers() -> dict[str, bytes]:
    import hashlib  # noqa: F401  (kept next to HASHED for clarity)

    inner = b"some text before " + MARK + b" and after\n"
    return {
        "c_zip": zip_of({"a.txt": inner}),
        "c_zip_stored": zip_of({"a.txt": inner}, zipfile.ZIP_STORED),
        "c_zip_in_zip": zip_of({"in.zip": zip_of({"a.txt": inner})}),
        "c_tar_gz": gz(tar_of({"d/a.txt": inner})),
        "c_tar": tar_of({"a.txt": inner, "b.txt": b"clean\n"}),
        "c_bz2": bz(inner),
        "c_xz": xz(inner),
        "c_7z": seven_zip_of({"a.txt": inner}),
        "c_mail_base64": message_with(inner, "a.bin", "base64"),
        "c_mail_qp": message_with(inner, "a.txt", "quoted-printable"),
        "c_mail_uu": message_with(inner, "a.bin", "x-uuencode"),
        "c_mail_inline_uu": inline_uuencoded_message(inner, "a.bin"),
        "c_mail_forwarded_zip": forwarded(message_with(zip_of({"a.txt": inner}), "z.zip")),
        "c_mail_hash_attachment": message_with(HASHED, "h.bin"),
        "c_clean_zip": zip_of({"a.txt": b"nothing\n"}),
        "c_clean_mail": message_with(b"nothing at all\n", "n.txt"),
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import hashlib

    root = tmp_path_factory.mktemp("diff")
    files = database_files()
    files["diff.ndb"] = MARK_NDB
    files["container.ldb"] = (
        "Diff.InZip;Engine:51-255,Target:0,Container:CL_TYPE_ZIP;0;" + ZIPPED.hex() + "\n"
        "Diff.InMail;Engine:51-255,Target:0,Container:CL_TYPE_MAIL;0;" + MAILED.hex() + "\n")
    # EICAR as the official database spells it: our built-in EICAR then stands aside.
    files["diff.hdb"] = (f"{hashlib.md5(HASHED).hexdigest()}:{len(HASHED)}:Diff.Hashed\n"
                         f"{hashlib.md5(EICAR).hexdigest()}:{len(EICAR)}:Win.Test.EICAR_HDB-1\n")
    db = write_db(root / "db", files)
    samples = root / "samples"
    samples.mkdir()
    for i, (_, _, match, near_miss) in enumerate(CASES):
        (samples / f"case{i:02d}_match").write_bytes(match)
        (samples / f"case{i:02d}_miss").write_bytes(near_miss)
    for name, data in _containers().items():
        (samples / name).write_bytes(data)
    for name, marker in (("zipped", ZIPPED), ("mailed", MAILED)):
        inner = b"x " + marker + b" y\n"
        (samples / f"k_{name}_plain").write_bytes(inner)
        (samples / f"k_{name}_zip").write_bytes(zip_of({"a.txt": inner}))
        (samples / f"k_{name}_tar").write_bytes(tar_of({"a.txt": inner}))
        (samples / f"k_{name}_mail").write_bytes(message_with(inner, "a.bin"))
    (samples / "eicar_plain").write_bytes(EICAR)
    (samples / "eicar_zip").write_bytes(zip_of({"eicar.com": EICAR}))
    (samples / "eicar_mail").write_bytes(message_with(EICAR, "eicar.com", "base64"))
    return db, samples


_LINE = re.compile(r"^(.*): (.+) FOUND$|^(.*): OK$")


def _results(output: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for line in output.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        if m.group(3) is not None:
            found.setdefault(m.group(3), set())
        else:
            found.setdefault(m.group(1), set()).add(m.group(2))
    return found


def _run_both(db, samples, *options):
    clam = subprocess.run(["clamscan", "--no-summary", "-d", str(db), *options, str(samples)],
                          capture_output=True, check=False, text=True, timeout=300)
    ours = subprocess.run([sys.executable, "-m", "mailyard", "scan", "--no-summary", "-d",
                           str(db), *options, str(samples)],
                          capture_output=True, check=False, text=True, timeout=300)
    assert "ERROR" not in clam.stderr, clam.stderr
    return clam, ours


def test_same_names_with_allmatch(corpus):
    db, samples = corpus
    clam, ours = _run_both(db, samples, "--allmatch")
    theirs, mine = _results(clam.stdout), _results(ours.stdout)
    assert set(theirs) == set(mine)
    differences = {f: (theirs[f], mine[f]) for f in theirs if theirs[f] != mine[f]}
    assert differences == {}
    assert clam.returncode == ours.returncode == 1


def test_same_verdicts_first_match(corpus):
    db, samples = corpus
    clam, ours = _run_both(db, samples)
    theirs, mine = _results(clam.stdout), _results(ours.stdout)
    assert {f for f, n in theirs.items() if n} == {f for f, n in mine.items() if n}


@pytest.mark.parametrize("option", ["--scan-archive=no", "--scan-mail=no"])
def test_same_verdicts_with_options(corpus, option):
    db, samples = corpus
    clam, ours = _run_both(db, samples, "--allmatch", option)
    theirs, mine = _results(clam.stdout), _results(ours.stdout)
    assert {f for f, n in theirs.items() if n} == {f for f, n in mine.items() if n}
