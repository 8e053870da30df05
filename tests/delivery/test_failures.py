"""Failure replies per recipient: quota as 452 when configured, 451 when the store fails."""

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.delivery.agent import QUOTA_FULL_TEMP, STORE_FAILED

from .test_lmtp import lmtp, messages, send_lmtp, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("failures"), users=["ok", "brokenbox"],
                       quota_users=("small",),
                       toml="[delivery]\nquota_tempfail = true\n"
                            "[smtp]\nmax_message_size = 20000\n")
    yield srv
    srv.stop()


def test_quota_tempfail_answers_452(server):
    client = lmtp(server)
    big = b"Subject: big\r\n\r\n" + b"x" * 3000 + b"\r\n"
    rcpts, datas = send_lmtp(client, "s@remote.test", ["small@example.test", "ok@example.test"],
                             big)
    client.quit()
    assert [c for c, _ in rcpts] == [250, 250]
    assert datas[0][0] == QUOTA_FULL_TEMP.code and b"4.2.2" in datas[0][1]
    assert datas[1][0] == 250


def test_store_failure_is_451_for_that_recipient_only(server):
    # The user's Maildir path is taken by a plain file: every store attempt fails.
    box = server.maildir("brokenbox@example.test")
    box.parent.mkdir(parents=True, exist_ok=True)
    box.write_bytes(b"not a directory")
    client = lmtp(server)
    _rcpts, datas = send_lmtp(client, "s@remote.test",
                             ["brokenbox@example.test", "ok@example.test"],
                             b"Subject: hi\r\n\r\nx\r\n")
    # The session survives and keeps working.
    code, _ = client.noop()
    client.quit()
    assert datas[0][0] == STORE_FAILED.code and b"4.3.0" in datas[0][1]
    assert datas[1][0] == 250
    assert code == 250
    assert len(messages(server, "ok@example.test")) >= 1


def test_oversized_message_refused_per_recipient(server):
    client = lmtp(server)
    huge = b"Subject: huge\r\n\r\n" + (b"y" * 998 + b"\r\n") * 40
    _, datas = send_lmtp(client, "s@remote.test", ["ok@example.test", "ok@example.test"],
                         huge)
    code, _ = client.noop()
    client.quit()
    assert [c for c, _ in datas] == [552, 552]
    assert all(b"5.3.4" in text for _, text in datas)
    assert code == 250


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6))
def test_garbage_never_takes_the_listener_down(server, chunks):
    with socket.create_connection(("127.0.0.1", server.port("lmtp")), timeout=30) as sock:
        sock.recv(1024)
        for chunk in chunks:
            try:
                sock.sendall(chunk + b"\r\n")
            except OSError:
                break
    client = lmtp(server)
    assert client.noop()[0] == 250
    client.quit()


def test_250_survives_sigkill(server):
    """A message answered 250 is on disk: kill -9 right after the reply loses nothing."""
    client = lmtp(server)
    _, datas = send_lmtp(client, "s@remote.test", ["ok@example.test"],
                         b"Subject: durable\r\n\r\nkeep me\r\n")
    assert datas[0][0] == 250
    server.kill()
    assert any(b"Subject: durable" in m for m in messages(server, "ok@example.test"))
