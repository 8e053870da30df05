"""Debian's clamdscan, unchanged, against mailyard's clamd listener (TCP and unix socket)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from av_samples import EICAR, message_with, write_db, zip_of

pytestmark = pytest.mark.skipif(shutil.which("clamdscan") is None,
                                reason="clamdscan is not installed (tests/debian-packages.txt)")

MARK_NDB = "Clamd.Mark:0:*:636c616d642d746573742d6d61726b\n"


@pytest.fixture
def clamd(mailyard_server, tmp_path):
    db = write_db(tmp_path / "db", {"local.ndb": MARK_NDB})
    srv = mailyard_server(services={"clamd"}, toml=(
        f'[antivirus]\ndatabases = "{db}"\nstream_max_length = 200000\n'))
    conf = tmp_path / "clamd.conf"
    conf.write_text(f"TCPSocket {srv.port('clamd')}\nTCPAddr 127.0.0.1\n")
    srv.db = db
    srv.clamd_conf = conf
    return srv


def clamdscan(conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["clamdscan", f"--config-file={conf}", "--no-summary", *args],
                          capture_output=True, check=False, text=True, timeout=120)


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "files"
    d.mkdir()
    (d / "clean.txt").write_bytes(b"nothing to see\n")
    (d / "eicar.com").write_bytes(EICAR)
    (d / "marked.txt").write_bytes(b"a clamd-test-mark here\n")
    (d / "mail.eml").write_bytes(message_with(zip_of({"e.com": EICAR}), "e.zip"))
    return d


def test_clamdscan_version_and_ping(clamd):
    # The listener loads the database in a pool worker at start-up (and fills the cache).
    clamd.wait_for_log("clamd signatures loaded", timeout=60)
    # the compiled cache is written by a background thread once the engine is ready
    cache = clamd.data_dir / "antivirus-cache"
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.yarx")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(cache.glob("*.yarx"))
    result = clamdscan(clamd.clamd_conf, "--version")
    assert result.returncode == 0 and result.stdout.startswith("ClamAV mailyard-av")
    result = subprocess.run(["clamdscan", f"--config-file={clamd.clamd_conf}", "--ping", "1"],
                            capture_output=True, check=False, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("mode", [[], ["--stream"], ["-m"]])
def test_clamdscan_scans_files(clamd, files, mode):
    result = clamdscan(clamd.clamd_conf, *mode, str(files / "clean.txt"),
                       str(files / "eicar.com"), str(files / "marked.txt"),
                       str(files / "mail.eml"))
    lines = set(result.stdout.splitlines())
    assert f"{files}/eicar.com: Eicar-Test-Signature FOUND" in lines
    assert f"{files}/marked.txt: Clamd.Mark.UNOFFICIAL FOUND" in lines
    assert f"{files}/mail.eml: Eicar-Test-Signature FOUND" in lines
    assert f"{files}/clean.txt: OK" in lines
    assert result.returncode == 1


def test_clamdscan_directory_and_allmatch(clamd, files):
    both = files / "both.txt"
    both.write_bytes(EICAR + b"\n")
    (files / "sub").mkdir()
    (files / "sub" / "deep.txt").write_bytes(b"clamd-test-mark")
    result = clamdscan(clamd.clamd_conf, "--allmatch", str(files))
    lines = set(result.stdout.splitlines())
    assert f"{files}/sub/deep.txt: Clamd.Mark.UNOFFICIAL FOUND" in lines
    assert f"{files}/eicar.com: Eicar-Test-Signature FOUND" in lines
    assert result.returncode == 1


def test_clamdscan_clean_exit_zero(clamd, files):
    result = clamdscan(clamd.clamd_conf, "--stream", str(files / "clean.txt"))
    assert result.returncode == 0 and f"{files}/clean.txt: OK" in result.stdout


def test_stream_max_length_enforced(clamd, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 300000)
    result = clamdscan(clamd.clamd_conf, "--stream", str(big))
    assert result.returncode == 2
    assert "size limit exceeded" in (result.stdout + result.stderr)
    # The listener is still fine afterwards.
    assert clamdscan(clamd.clamd_conf, "--version").returncode == 0


def test_missing_path_is_an_error(clamd, tmp_path):
    result = clamdscan(clamd.clamd_conf, str(tmp_path / "nope"))
    assert result.returncode == 2


def test_reload_picks_up_new_signatures(clamd, files):
    target = files / "later.txt"
    target.write_bytes(b"signature-added-later\n")
    assert clamdscan(clamd.clamd_conf, str(target)).returncode == 0
    (clamd.db / "later.ndb").write_text("Clamd.Later:0:*:7369676e61747572652d61646465642d6c61746572\n")
    reload = subprocess.run(["clamdscan", f"--config-file={clamd.clamd_conf}", "--reload"],
                            capture_output=True, check=False, text=True, timeout=60)
    assert reload.returncode == 0
    result = clamdscan(clamd.clamd_conf, str(target))
    assert result.returncode == 1 and "Clamd.Later.UNOFFICIAL FOUND" in result.stdout


def _talk(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_idsession_over_raw_socket(clamd):
    stream = struct.pack(">I", len(EICAR)) + EICAR + b"\0\0\0\0"
    reply = _talk(clamd.port("clamd"),
                  b"zIDSESSION\0zPING\0zINSTREAM\0" + stream + b"nPING\nzEND\0")
    assert reply == b"1: PONG\x002: stream: Eicar-Test-Signature FOUND\x003: PONG\n"


def test_garbage_gets_unknown_command_and_server_survives(clamd):
    assert _talk(clamd.port("clamd"), b"\xff\xfe garbage\n") == b"UNKNOWN COMMAND\n"
    assert _talk(clamd.port("clamd"), b"zINSTREAM\0\x00\x00") == b""  # truncated upload
    assert _talk(clamd.port("clamd"), b"nPING\n") == b"PONG\n"


def test_unix_socket_listener(mailyard_server, tmp_path, files):
    sock = tmp_path / "clamd.sock"
    srv = mailyard_server(services=(), toml=f'[listen]\nclamd = "unix:{sock}"\n')
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    conf = tmp_path / "unix.conf"
    conf.write_text(f"LocalSocket {sock}\n")
    result = clamdscan(conf, "--stream", str(files / "eicar.com"))
    assert result.returncode == 1, srv.log_text()
    assert "Eicar-Test-Signature FOUND" in result.stdout


def test_fifo_is_refused_not_hung(clamd, tmp_path):
    fifo = tmp_path / "pipe"
    import os

    os.mkfifo(fifo)
    assert _talk(clamd.port("clamd"), f"nSCAN {fifo}\n".encode()) == \
        f"{fifo}: Not supported file type. ERROR\n".encode()
