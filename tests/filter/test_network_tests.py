"""The filter answers the spam rules' URIBL/DNSBL questions through [dns] (dnslib on loopback)."""

from __future__ import annotations

from mailyard.config import load
from mailyard.filter import worker


def _settings(tmp_path, nameserver: str, network: bool = True):
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\nhostname = "mx.example.test"\n'
                   f'[dns]\nnameservers = ["{nameserver}"]\ntimeout = 2.0\n'
                   f'[spam]\nnetwork_tests = {"true" if network else "false"}\nbayes = false\n')
    return load(str(cfg))


MESSAGE = (b"From: a@example.org\r\nTo: b@example.test\r\nSubject: deal\r\n"
           b"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <x@example.org>\r\n\r\n"
           b"Visit http://listed-spam.example/offer today.\r\n")


def test_uribl_listed_domain_hits(tmp_path, dns_server):
    dns_server.add("listed-spam.example.dbl.spamhaus.org.", "A", "127.0.1.2")
    path = tmp_path / "msg.eml"
    path.write_bytes(MESSAGE)
    result = worker.scan_file(_settings(tmp_path, dns_server.address), 1, str(path))
    assert result.error is None, result.error
    assert "URIBL_DBL_LISTED" in {h.name for h in result.hits}
    assert ("listed-spam.example.dbl.spamhaus.org.", "A") in dns_server.queries


def test_network_tests_off_asks_nothing(tmp_path, dns_server):
    path = tmp_path / "msg.eml"
    path.write_bytes(MESSAGE)
    result = worker.scan_file(_settings(tmp_path, dns_server.address, network=False), 2,
                              str(path))
    assert "URIBL_DBL_LISTED" not in {h.name for h in result.hits}
    assert dns_server.queries == []


def test_dead_resolver_pauses_network_tests(tmp_path):
    from harness import free_port

    worker._dns_down_until = 0.0
    path = tmp_path / "msg.eml"
    path.write_bytes(MESSAGE)
    settings = _settings(tmp_path, f"127.0.0.1:{free_port()}")
    result = worker.scan_file(settings, 3, str(path))
    assert result.error is None and result.spam_checked
    assert worker._dns_down_until > 0   # the next messages skip DNS for a while
    worker._dns_down_until = 0.0
