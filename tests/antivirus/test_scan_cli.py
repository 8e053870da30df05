"""`mailyard scan`: clamscan's output, options and exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from av_samples import EICAR, write_db, zip_of


def scan(*args: str, input: bytes | None = None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mailyard", "scan", *args], input=input,
                          capture_output=True, check=False, timeout=120, cwd=cwd)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "clean.txt").write_bytes(b"fine\n")
    (root / "eicar.zip").write_bytes(zip_of({"e.com": EICAR}))
    (root / "sub" / "marked.txt").write_bytes(b"cli-test-mark\n")
    write_db(tmp_path / "db", {"m.ndb": "Cli.Mark:0:*:636c692d746573742d6d61726b\n"})
    return tmp_path


def test_found_exit_one_and_summary(tree):
    result = scan("-d", "db", "tree", cwd=tree)
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "tree/eicar.zip: Eicar-Test-Signature FOUND" in out
    assert "tree/clean.txt: OK" in out
    assert "sub/marked.txt" not in out  # not recursive without -r
    assert "----------- SCAN SUMMARY -----------" in out and "Infected files: 1" in out


def test_recursive_and_no_summary(tree):
    result = scan("--db", "db", "-r", "--no-summary", "tree", cwd=tree)
    out = result.stdout.decode()
    assert "tree/sub/marked.txt: Cli.Mark.UNOFFICIAL FOUND" in out
    assert "SCAN SUMMARY" not in out and result.returncode == 1


def test_clean_exit_zero(tree):
    result = scan("--database=db", "--no-summary", "tree/clean.txt", cwd=tree)
    assert result.returncode == 0 and result.stdout == b"tree/clean.txt: OK\n"


def test_missing_path_exit_two(tree):
    result = scan("--no-summary", "tree/eicar.zip", "nope", cwd=tree)
    assert result.returncode == 2
    assert b"nope: No such file or directory" in result.stderr
    assert b"tree/eicar.zip: Eicar-Test-Signature FOUND" in result.stdout


def test_stdin(tree):
    result = scan("--no-summary", "-", input=EICAR)
    assert result.stdout == b"stdin: Eicar-Test-Signature FOUND\n" and result.returncode == 1


def test_scan_archive_no(tree):
    result = scan("--no-summary", "--scan-archive=no", "tree/eicar.zip", cwd=tree)
    assert result.returncode == 0


def test_bad_yes_no_value(tree):
    assert scan("--scan-mail=maybe", "tree", cwd=tree).returncode == 2


def test_database_errors_are_warnings_not_fatal(tree):
    (tree / "db" / "bad.ndb").write_text("Bad:0:*:zz\n")
    result = scan("-d", "db", "--no-summary", "tree/sub/marked.txt", cwd=tree)
    assert result.returncode == 1
    assert b"bad.ndb:1: bad hex byte" in result.stderr


def test_configured_server_reuses_the_compiled_cache(tree):
    data = tree / "var"
    data.mkdir()
    (tree / "mailyard.toml").write_text(f'[server]\ndata_dir = "{data}"\n')
    for _ in range(2):
        result = scan("-c", "mailyard.toml", "-d", "db", "--no-summary", "tree/sub/marked.txt",
                      cwd=tree)
        assert result.stdout == b"tree/sub/marked.txt: Cli.Mark.UNOFFICIAL FOUND\n"
    assert list((data / "antivirus-cache").glob("*.yarx"))
