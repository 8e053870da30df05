"""ManageSieve over a real socket: the server as a subprocess, real clients (sievelib, Debian's
sieve-connect), real accounts, real TLS."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import warnings

import pytest
from sievelib.managesieve import Client

from mailyard.sieve.storage import active_script_text

USER, PASSWORD = "alice@example.test", "s3cret-pw"
SCRIPT = 'require ["fileinto"];\r\nif header :contains "subject" "x" { fileinto "X"; }\r\n'


@pytest.fixture
def server(mailyard_server, tls_certs):
    srv = mailyard_server(services={"managesieve"}, toml=tls_certs.toml() +
                          "[sieve]\nmax_scripts = 5\nmax_script_size = 4096\n")
    srv.cli("user", "add", USER, "--password-stdin", input=PASSWORD + "\n")
    return srv


def client(srv) -> Client:
    c = Client("127.0.0.1", srv.port("managesieve"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sievelib warns about plaintext on loopback
        assert c.connect(USER, PASSWORD, authmech="PLAIN")
    return c


def test_sievelib_full_session(server):
    c = client(server)
    assert "fileinto" in c.get_sieve_capabilities()
    assert c.get_implementation() == "mailyard"
    assert c.putscript("main", SCRIPT)
    assert c.havespace("other", 100)
    assert not c.havespace("other", 100000)
    assert c.setactive("main")
    assert c.listscripts() == ("main", [])
    # sievelib returns the lines joined with "\n"
    assert c.getscript("main").splitlines() == SCRIPT.splitlines()
    assert c.checkscript("keep;")
    assert not c.checkscript("kepp;")
    assert c.errmsg.startswith(b"script: line 1, column 1")
    assert not c.putscript("broken", "if true {\r\n")
    assert c.errmsg == b"broken: line 2, column 1: missing '}' at end of script"
    assert c.putscript("spare", "keep;")
    assert c.renamescript("spare", "spare2")
    assert c.listscripts() == ("main", ["spare2"])
    assert not c.deletescript("main")           # active
    assert c.deletescript("spare2")
    c.logout()
    # Delivery reads the active script through the storage layer.
    assert active_script_text(server.data_dir, USER) == SCRIPT


def test_sievelib_wrong_password(server):
    c = Client("127.0.0.1", server.port("managesieve"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not c.connect(USER, "wrong", authmech="PLAIN")


def test_sievelib_starttls(server, tls_certs, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_certs.ca_path))
    c = Client("127.0.0.1", server.port("managesieve"))
    assert c.connect(USER, PASSWORD, starttls=True, authmech="PLAIN")
    assert c.putscript("tls", "keep;")
    assert c.listscripts() == (None, ["tls"])
    c.logout()


def test_quota_on_script_count(server):
    c = client(server)
    for i in range(5):
        assert c.putscript(f"s{i}", "keep;")
    assert not c.putscript("s5", "keep;")
    assert c.errcode == b"QUOTA/MAXSCRIPTS"
    assert c.putscript("s0", "discard;")      # replacing an existing one is fine
    c.logout()


def test_raw_socket_hostile_input_keeps_server_alive(server):
    with socket.create_connection(("127.0.0.1", server.port("managesieve"))) as sock:
        sock.settimeout(10)
        f = sock.makefile("rb")
        while not f.readline().startswith(b"OK"):
            pass
        sock.sendall(b"\x00\xff garbage\r\n" + b"PUTSCRIPT {99999999999+}\r\n")
        assert f.readline().startswith(b"NO")
        assert f.readline().startswith(b"NO")
        sock.sendall(b"A" * 20000)
        assert f.readline().startswith(b"BYE")
    # The server still answers new connections.
    c = client(server)
    c.logout()


def test_tls_handshake_then_capabilities(server, tls_certs):
    with socket.create_connection(("127.0.0.1", server.port("managesieve"))) as raw:
        f = raw.makefile("rb")
        greeting = []
        while True:
            line = f.readline()
            greeting.append(line)
            if line.startswith(b"OK"):
                break
        assert b'"STARTTLS"\r\n' in greeting
        raw.sendall(b"STARTTLS\r\n")
        assert f.readline().startswith(b"OK")
        tls = tls_certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tf = tls.makefile("rb")
        after = []
        while True:
            line = tf.readline()
            after.append(line)
            if line.startswith(b"OK"):
                break
        # RFC 5804 §2.2: capabilities again, without STARTTLS.
        assert b'"STARTTLS"\r\n' not in after
        assert any(line.startswith(b'"SIEVE"') for line in after)
        tls.close()


SIEVE_CONNECT = shutil.which("sieve-connect")


@pytest.mark.skipif(SIEVE_CONNECT is None, reason="sieve-connect not installed")
def test_sieve_connect_upload_list_download(server, tls_certs, tmp_path):
    local = tmp_path / "vacation.sieve"
    local.write_text('require "vacation";\nvacation :days 3 "away";\n')
    base = [SIEVE_CONNECT, "-s", "127.0.0.1", "-p", str(server.port("managesieve")),
            "-u", USER, "--passwordfd", "0", "--tlscafile", str(tls_certs.ca_path),
            "--authmech", "PLAIN"]

    def sc(*args):
        proc = subprocess.run(base + list(args), input=PASSWORD + "\n", check=False,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    sc("--upload", "--localsieve", str(local), "--remotesieve", "vacation")
    sc("--activate", "--remotesieve", "vacation")
    listing = sc("--list")
    assert '"vacation" ACTIVE' in listing
    out = tmp_path / "downloaded.sieve"
    sc("--download", "--remotesieve", "vacation", "--localsieve", str(out))
    assert out.read_text() == local.read_text()
    assert active_script_text(server.data_dir, USER) == local.read_text()
    sc("--deactivate")
    sc("--delete", "--remotesieve", "vacation")
    assert "vacation" not in sc("--list")


def test_huge_literal_is_refused_and_the_session_continues(server):
    with socket.create_connection(("127.0.0.1", server.port("managesieve"))) as sock:
        sock.settimeout(10)
        f = sock.makefile("rb")
        while not f.readline().startswith(b"OK"):
            pass
        token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
        sock.sendall(b'AUTHENTICATE "PLAIN" "' + token + b'"\r\n')
        assert f.readline() == b'OK "Logged in."\r\n'
        chunk = b"# " + b"x" * 1020 + b"\r\n"   # 1024 octets
        size = 3 * 1024 * len(chunk)
        sock.sendall(b'PUTSCRIPT "huge" {%d+}\r\n' % size)
        for _ in range(3 * 1024):
            sock.sendall(chunk)
        sock.sendall(b"\r\nLISTSCRIPTS\r\n")
        assert f.readline().startswith(b"NO (QUOTA/MAXSIZE)")
        assert f.readline() == b'OK "Listscripts completed."\r\n'


def test_unicode_script_names(server):
    c = client(server)
    assert c.putscript("Ferien \u00e4\u00f6\u00fc", "keep;")
    assert c.setactive("Ferien \u00e4\u00f6\u00fc")
    assert c.listscripts() == ("Ferien \u00e4\u00f6\u00fc", [])
    c.logout()


def test_starttls_command_injection_is_ignored(server, tls_certs):
    with socket.create_connection(("127.0.0.1", server.port("managesieve"))) as raw:
        f = raw.makefile("rb")
        while not f.readline().startswith(b"OK"):
            pass
        # The injected CAPABILITY rides in the same segment as STARTTLS.
        raw.sendall(b"STARTTLS\r\nCAPABILITY\r\n")
        assert f.readline().startswith(b"OK")
        tls = tls_certs.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
        tls.settimeout(10)
        tf = tls.makefile("rb")
        while not tf.readline().startswith(b"OK"):   # the capabilities re-issued after TLS
            pass
        tls.sendall(b'NOOP "after"\r\n')
        # Had CAPABILITY run, its listing would come before the NOOP reply.
        assert tf.readline() == b'OK (TAG "after") "Done."\r\n'
        tls.close()
