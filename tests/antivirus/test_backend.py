"""Delegation to a real clamd (Debian's clamav-daemon, started here on a loopback port)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from av_samples import EICAR, message_with, write_db, zip_of
from harness import free_port, wait_for_port

from mailyard.antivirus import VirusEngine
from mailyard.antivirus.backend import BackendError, ClamdBackend
from mailyard.config import load

pytestmark = pytest.mark.skipif(shutil.which("clamd") is None,
                                reason="clamd is not installed (tests/debian-packages.txt)")

MARK = b"backend-delegation-mark"


@pytest.fixture(scope="module")
def real_clamd(tmp_path_factory):
    root = tmp_path_factory.mktemp("clamd")
    write_db(root / "db", {"b.ndb": f"Backend.Mark:0:*:{MARK.hex()}\n"})
    port = free_port()
    conf = root / "clamd.conf"
    conf.write_text(f"Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\n"
                    f"DatabaseDirectory {root / 'db'}\nLogFile {root / 'clamd.log'}\n"
                    f"PidFile {root / 'clamd.pid'}\nTemporaryDirectory {root}\n")
    proc = subprocess.Popen(["clamd", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60, proc=proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_backend_reports_clamd_names_and_our_attachments(real_clamd):
    backend = ClamdBackend(real_clamd)
    assert backend.ping()
    verdict = backend.scan_message(message_with(zip_of({"m.txt": b"x " + MARK}), "m.zip"))
    assert verdict.infected and verdict.names == ("Backend.Mark.UNOFFICIAL",)
    assert {a.name for a in verdict.attachments} >= {"m.zip", "m.txt"}
    assert not backend.scan_bytes(b"clean").infected


def test_from_settings_picks_the_backend(real_clamd, tmp_path):
    config = tmp_path / "m.toml"
    config.write_text(f'[antivirus]\nbackend = "{real_clamd}"\n')
    scanner = VirusEngine.from_settings(load(config))
    assert isinstance(scanner, ClamdBackend)
    assert scanner.scan_bytes(MARK).names == ("Backend.Mark.UNOFFICIAL",)


def test_unreachable_backend_raises_never_passes():
    backend = ClamdBackend(f"127.0.0.1:{free_port()}", timeout=5)
    with pytest.raises(BackendError):
        backend.scan_bytes(EICAR)


def test_backend_can_be_our_own_listener(mailyard_server):
    srv = mailyard_server(services={"clamd"})
    verdict = ClamdBackend(srv.address("clamd")).scan_bytes(EICAR)
    assert verdict.names == ("Eicar-Test-Signature",)
