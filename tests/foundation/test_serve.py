"""`mailyard serve`: every enabled listener up, one log line each, clean SIGTERM, SIGHUP."""

from __future__ import annotations

import socket
import ssl
import time

from harness import ALL_SERVICES


def test_serve_starts_listeners_and_stops_on_sigterm(mailyard_server):
    srv = mailyard_server(services={"smtp", "imap"})
    text = srv.log_text()
    assert text.count("listening service=") == 2
    assert "ready" in text
    start = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - start < 10
    assert "stopped" in srv.log_text()


def test_tls_self_signed_pair_generated(mailyard_server):
    srv = mailyard_server(services={"imaps"})
    assert (srv.data_dir / "tls" / "selfsigned.crt").is_file()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", srv.port("imaps")), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_configured_certificate_is_used(mailyard_server, tls_certs):
    srv = mailyard_server(services={"imaps"}, toml=tls_certs.toml())
    with socket.create_connection(("127.0.0.1", srv.port("imaps")), timeout=5) as raw:
        with tls_certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.getpeercert()


def test_sighup_reloads_accounts_and_config(mailyard_server):
    srv = mailyard_server(services={"smtp"})
    srv.reload()
    srv.wait_for_log("reloaded")
    srv.config_path.write_text(srv.config_path.read_text() + "\n[bogus]\n")
    srv.reload()
    srv.wait_for_log("reload refused")
    assert srv.proc.poll() is None


def test_only_runs_selected_services(mailyard_server):
    srv = mailyard_server(services={"smtp", "lmtp"}, start=False)
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mailyard", "-c", str(srv.config_path),
                             "serve", "--only", "lmtp"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        from harness import wait_for_port

        wait_for_port("127.0.0.1", srv.port("lmtp"), 20, proc)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", srv.port("smtp"))) != 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_unknown_only_service_refused(mailyard_server):
    srv = mailyard_server(services={"smtp"}, start=False)
    r = srv.cli("serve", "--only", "gopher", check=False)
    assert r.returncode == 2 and "unknown service gopher" in r.stderr


def test_every_service_name_is_known():
    from mailyard.server.services import SERVICES

    assert set(SERVICES) == set(ALL_SERVICES)


def test_metrics_count_events(mailyard_server):
    import smtplib
    import urllib.request

    srv = mailyard_server(services={"smtp", "metrics"})
    with smtplib.SMTP("127.0.0.1", srv.port("smtp"), timeout=10) as client:
        client.noop()
    srv.wait_for_log("session end")
    url = f"http://127.0.0.1:{srv.port('metrics')}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'mailyard_info{version="' in text
    import re

    # The harness's readiness probe is a session too, so at least one, counted.
    count = re.search(r'mailyard_events_total\{logger="mailyard.mta",event="session end"\} (\d+)',
                      text)
    assert count and int(count.group(1)) >= 1
    assert 'mailyard_connections{service="smtp"}' in text
    import urllib.error

    try:
        urllib.request.urlopen(url.replace("/metrics", "/nope"), timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404
