"""The spamd listener with Debian's real `spamc`, over real sockets on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import zlib

import pytest

pytestmark = pytest.mark.skipif(shutil.which("spamc") is None, reason="spamc not installed")

GTUBE = (b"Subject: Test spam mail (GTUBE)\r\nMessage-ID: <GTUBE1.1010101@example.net>\r\n"
         b"Date: Wed, 23 Jul 2003 23:30:00 +0200\r\nFrom: Sender <sender@example.net>\r\n"
         b"To: Recipient <recipient@example.net>\r\n\r\nThis is the GTUBE.\r\n\r\n"
         b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
HAM = (b"Subject: Lunch\r\nMessage-ID: <lunch1@example.org>\r\n"
       b"Date: Wed, 23 Jul 2003 23:30:00 +0200\r\nFrom: Alice <alice@example.org>\r\n"
       b"To: Bob <bob@example.test>\r\n\r\nAre we still on for Thursday?\r\n")


@pytest.fixture(scope="module")
def spamd(tmp_path_factory):
    from harness import MailyardServer

    srv = MailyardServer(root=tmp_path_factory.mktemp("spamd"), services={"spamd"},
                         domains=["example.test"],
                         toml="[spam]\nper_user_bayes = true\nauto_learn = false\n")
    srv.start()
    yield srv
    srv.stop()


def spamc(srv, *args: str, message: bytes = GTUBE) -> subprocess.CompletedProcess:
    return subprocess.run(["spamc", "-d", "127.0.0.1", "-p", str(srv.port("spamd")),
                           "-t", "60", *args], input=message, capture_output=True, timeout=120)


def test_check(spamd):
    result = spamc(spamd, "-c")
    assert result.stdout == b"1000.0/5.0\n" and result.returncode == 1
    result = spamc(spamd, "-c", message=HAM)
    assert result.returncode == 0 and result.stdout.endswith(b"/5.0\n")


def test_symbols(spamd):
    assert spamc(spamd, "-y").stdout.split(b",")[0] == b"GTUBE"


def test_report(spamd):
    out = spamc(spamd, "-R").stdout
    assert out.startswith(b"1000.0/5.0\n") and b"GTUBE" in out and b"pts rule name" in out
    assert b"pts rule name" not in spamc(spamd, "-r", message=HAM).stdout


def test_process_adds_headers_and_keeps_body(spamd):
    out = spamc(spamd).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"X-Spam-Flag: YES" in head and b"X-Spam-Status: Yes, score=1000.0" in head
    assert body == GTUBE.partition(b"\r\n\r\n")[2]


def test_headers_only(spamd):
    out = spamc(spamd, "--headers").stdout
    assert b"X-Spam-Level: *****" in out and b"GTUBE-STANDARD" in out  # spamc re-adds body


def test_ping(spamd):
    result = spamc(spamd, "-K")
    assert result.returncode == 0 and result.stdout.startswith(b"SPAMD/1.5 0")


def test_tell_learn_and_forget_per_user(spamd):
    first = spamc(spamd, "-u", "alice", "-L", "spam", message=HAM)
    assert first.returncode == 0 and b"successfully" in first.stdout
    again = spamc(spamd, "-u", "alice", "-L", "spam", message=HAM)
    assert b"already" in again.stdout
    assert (spamd.data_dir / "bayes" / "alice.sqlite3").exists()
    forget = spamc(spamd, "-u", "alice", "-L", "forget", message=HAM)
    assert b"successfully" in forget.stdout
    stats = spamd.cli("spam", "stats", "--json").stdout
    assert '"spam": 0' in stats


def raw_request(srv, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port("spamd")), timeout=60) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_zlib_compressed_request(spamd):
    # Debian's spamc is built without zlib, so speak the protocol directly for -z
    packed = zlib.compress(GTUBE)
    out = raw_request(spamd, b"SYMBOLS SPAMC/1.5\r\nCompress: zlib\r\nContent-length: %d\r\n\r\n"
                      % len(packed) + packed)
    assert out.startswith(b"SPAMD/1.5 0 EX_OK\r\n") and out.endswith(b"GTUBE")


@pytest.mark.parametrize("data,status", [
    (b"BOGUS SPAMC/1.5\r\n\r\n", b"76"),
    (b"CHECK SPAMC/1.5\r\nContent-length: 100\r\n\r\nshort", b"76"),
    (b"\xff\x00garbage\r\n\r\n", b"76"),
])
def test_malformed_requests_get_an_error_and_server_lives(spamd, data, status):
    out = raw_request(spamd, data)
    assert out.split(b" ")[1] == status
    assert spamc(spamd, "-c").returncode == 1
