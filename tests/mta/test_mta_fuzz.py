"""Server-level fuzz: random bytes in each connection state over a real socket; the server
must keep answering (never crash, never hang a session, never take the listener down)."""

from __future__ import annotations

import smtplib
import socket

import pytest
from harness import MailyardServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .peers import SENDERAUTH_OFF, TRUSTED_ONLY_LOCALHOST, UNTRUSTED, with_quiet_dns

PREFIXES = [b"", b"EHLO x\r\n", b"EHLO x\r\nMAIL FROM:<a@remote.example>\r\n",
            b"EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n",
            (b"EHLO x\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<alice@example.test>\r\n"
             b"DATA\r\n")]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    srv = MailyardServer(root=tmp_path_factory.mktemp("fuzz"), services={"smtp"},
                         domains=["example.test"],
                         toml=with_quiet_dns(TRUSTED_ONLY_LOCALHOST + "max_line_length = 512\n"
                                             + SENDERAUTH_OFF + "[greylist]\nenabled = false\n"))
    srv.start()
    srv.add_user("alice@example.test")
    yield srv
    assert "session crashed" not in srv.log_text()
    srv.stop()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PREFIXES), st.binary(max_size=600))
def test_random_bytes_in_every_state(fuzz_server, prefix, noise):
    with socket.create_connection(("127.0.0.1", fuzz_server.port("smtp")), timeout=10,
                                  source_address=(UNTRUSTED, 0)) as sock:
        sock.recv(1024)
        sock.sendall(prefix + noise + b"\r\n.\r\nQUIT\r\n")
        sock.settimeout(10)
        while True:        # read until the server closes (after QUIT or a 421)
            try:
                if not sock.recv(65536):
                    break
            except (ConnectionResetError, TimeoutError):
                break


def test_server_still_serves_after_fuzz(fuzz_server):
    with smtplib.SMTP("127.0.0.1", fuzz_server.port("smtp"),
                      source_address=(UNTRUSTED, 0)) as client:
        client.ehlo("after-fuzz")
        assert client.sendmail("a@remote.example", ["alice@example.test"],
                               "Subject: ok\r\n\r\nstill here\r\n") == {}
