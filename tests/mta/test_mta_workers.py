"""Accepting workers (`[smtp] processes`): SMTP sessions in more than one process, one queue.

The real server over loopback: a message a worker accepts is delivered by the main
process's scheduler; kill -9 of a worker right after its 250 loses nothing and the worker
is replaced; kill -9 of the main process takes the workers with it and a restart delivers
what they acknowledged; the per-IP limit holds across processes; bad settings are refused.
"""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import time

import pytest
from harness import free_port

from .peers import Sink

MESSAGE = b"From: a@example.net\r\nTo: alice@example.test\r\nSubject: %s\r\n\r\nHello.\r\n"


def config(sink: Sink, processes: int = 2, extra: str = "") -> str:
    return (sink.toml() + f"[greylist]\nenabled = false\n[smtp]\nprocesses = {processes}\n"
            + extra + "[queue]\ncontrol_poll = 0.2\n")


def worker_pids(srv, count: int = 1, timeout: float = 20.0) -> list[int]:
    """The pids of the accepting workers that said they were ready (a hang guard)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p) for p in dict.fromkeys(re.findall(r"accepting worker ready worker=\d+ pid=(\d+)",
                                                         srv.log_text()))]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"no {count} ready workers:\n{srv.log_text()[-4000:]}")


def accepted_by(srv, queue_id: str) -> int:
    match = re.search(rf"message accepted .*queue_id={queue_id} .*pid=(\d+)", srv.log_text())
    assert match, srv.log_text()[-4000:]
    return int(match.group(1))


def send(srv, subject: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=30) as client:
        client.ehlo("client.example")
        client.mail("a@example.net")
        client.rcpt("alice@example.test")
        code, text = client.data(MESSAGE % subject)
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[-1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_message_accepted_by_a_worker_is_delivered(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"}, toml=config(sink))
    srv.add_user("alice@example.test")
    (worker,) = worker_pids(srv)
    # An idle pool gives a new connection to the worker (the main process, which also runs
    # the scheduler, counts as one session busier).
    queue_id = send(srv, b"from-worker")
    assert accepted_by(srv, queue_id) == worker != srv.proc.pid
    sink.find(b"Subject: from-worker")
    # Many at once (the main process takes some once the worker is busy enough): every
    # one delivered, once.
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda i: send(srv, b"burst-%d" % i), range(24)))
    for i in range(24):
        sink.find(b"Subject: burst-%d\r\n" % i)
    assert {accepted_by(srv, q) for q in ids} <= {worker, srv.proc.pid}
    time.sleep(0.5)
    assert len(sink.messages) == 25


def test_kill9_worker_after_250_loses_nothing(mailyard_server):
    down = Sink.__new__(Sink)
    down.port = free_port()                 # the next hop is down: the entry stays queued
    srv = mailyard_server(services={"smtp"}, toml=config(down))
    srv.add_user("alice@example.test")
    (worker,) = worker_pids(srv)
    queue_id = send(srv, b"before-kill")
    assert accepted_by(srv, queue_id) == worker
    os.kill(worker, signal.SIGKILL)         # kill -9 right after the 250
    pids = worker_pids(srv, 2)
    assert pids[1] != worker
    assert "accepting worker exited" in srv.log_text()
    sink = Sink(down.port)
    try:
        srv.cli("queue", "flush")
        sink.find(b"Subject: before-kill")
        # The replacement accepts, and what it accepts is delivered.
        queue_id = send(srv, b"after-kill")
        assert accepted_by(srv, queue_id) == pids[1]
        sink.find(b"Subject: after-kill")
    finally:
        sink.stop()


def test_kill9_main_takes_workers_down_and_restart_delivers(mailyard_server):
    down = Sink.__new__(Sink)
    down.port = free_port()
    srv = mailyard_server(services={"smtp"}, toml=config(down))
    srv.add_user("alice@example.test")
    (worker,) = worker_pids(srv)
    queue_id = send(srv, b"main-killed")
    assert accepted_by(srv, queue_id) == worker
    srv.kill()                              # kill -9 of the main process
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(worker), "the worker outlived the main process"
    sink = Sink(down.port)
    try:
        srv.start()
        srv.cli("queue", "flush")           # it may have been deferred once before the kill
        sink.find(b"Subject: main-killed")
    finally:
        sink.stop()


def test_sigterm_stops_workers(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"}, toml=config(sink, processes=3))
    srv.add_user("alice@example.test")
    pids = worker_pids(srv, 2)
    assert srv.stop() == 0
    assert not any(alive(pid) for pid in pids)


def test_connections_per_ip_counted_across_processes(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"},
                          toml=config(sink, processes=3, extra="max_connections_per_ip = 2\n"))
    worker_pids(srv, 2)
    clients = []
    try:
        for _ in range(2):
            c = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=10)
            assert c.recv(512).startswith(b"220 ")
            clients.append(c)
        third = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=10)
        clients.append(third)
        assert third.recv(512).startswith(b"421 4.7.0")
        clients[0].sendall(b"QUIT\r\n")
        assert clients[0].recv(512).startswith(b"221 ")
        clients[0].close()
        # Once the process serving it says the session is over, there is room again.
        deadline = time.monotonic() + 10
        while True:
            again = socket.create_connection(("127.0.0.1", srv.port("smtp")), timeout=10)
            clients.append(again)
            greeting = again.recv(512)
            if greeting.startswith(b"220 ") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert greeting.startswith(b"220 "), greeting
    finally:
        for c in clients:
            c.close()


def test_one_process_serves_alone(mailyard_server, sink):
    srv = mailyard_server(services={"smtp"}, toml=config(sink, processes=1))
    srv.add_user("alice@example.test")
    queue_id = send(srv, b"single")
    assert accepted_by(srv, queue_id) == srv.proc.pid
    sink.find(b"Subject: single")
    assert "accepting worker" not in srv.log_text()


@pytest.mark.parametrize("value", ["-1", "65", '"auto"'])
def test_processes_setting_validated(mailyard_server, tmp_path, value):
    from harness import MailyardServer

    srv = MailyardServer(root=tmp_path, services={"smtp"}, domains=["example.test"],
                         toml=f"[smtp]\nprocesses = {value}\n")
    result = srv.cli("config", "check", check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "smtp.processes" in result.stdout + result.stderr


def test_respawn_delay_doubles_for_a_worker_that_dies_young():
    from mailyard.mta.workers import (
        RESPAWN_DELAY,
        RESPAWN_MAX_DELAY,
        STABLE_AFTER,
        respawn_delay,
    )

    assert respawn_delay(None, 0.1) == RESPAWN_DELAY            # its first death
    assert respawn_delay(RESPAWN_DELAY, 0.1) == 2 * RESPAWN_DELAY
    assert respawn_delay(8.0, 5.0) == 16.0
    assert respawn_delay(RESPAWN_MAX_DELAY, 0.1) == RESPAWN_MAX_DELAY  # capped
    assert respawn_delay(RESPAWN_MAX_DELAY, STABLE_AFTER) == RESPAWN_DELAY  # healthy again


def test_a_worker_killed_again_at_once_is_restarted_later(mailyard_server):
    sink = Sink()
    try:
        srv = mailyard_server(services={"smtp"}, toml=config(sink))
        (first,) = worker_pids(srv)
        os.kill(first, signal.SIGKILL)
        second = worker_pids(srv, 2)[1]
        os.kill(second, signal.SIGKILL)      # dies young: the next start waits longer
        third = worker_pids(srv, 3, timeout=30.0)[2]
        delays = re.findall(r"accepting worker exited .*restart_in=([\d.]+)", srv.log_text())
        assert [float(d) for d in delays] == [1.0, 2.0]
        assert third not in (first, second)
        srv.add_user("alice@example.test")
        assert accepted_by(srv, send(srv, b"third-worker")) in (third, srv.proc.pid)
        sink.find(b"Subject: third-worker")
    finally:
        sink.stop()
