"""Fixtures every test can use: the real server, a DNS server, TLS certificates."""

from __future__ import annotations

import os

import pytest
from harness import DnsServer, MailyardServer, TlsCerts
from hypothesis import settings as hypothesis_settings

# CI runs are reproducible: the same examples every run, no example database carried over.
# Locally hypothesis explores anew each run and replays what failed before.
hypothesis_settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


@pytest.fixture
def mailyard_server(tmp_path):
    """Factory: `mailyard_server(services={...}, domains=[...], toml="...")` → started server.

    Every server started through it is stopped (SIGTERM) at the end of the test.
    """
    servers: list[MailyardServer] = []

    def factory(services=("smtp",), domains=("example.test",), toml: str = "",
                start: bool = True, name: str | None = None, **kwargs) -> MailyardServer:
        root = tmp_path / (name or f"server{len(servers)}")
        srv = MailyardServer(root=root, services=set(services), domains=list(domains),
                             toml=toml, **kwargs)
        servers.append(srv)
        if start:
            srv.start()
        return srv

    yield factory
    for srv in servers:
        try:
            srv.stop()
        except AssertionError:
            srv.kill()


@pytest.fixture
def dns_server():
    server = DnsServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    return TlsCerts(tmp_path_factory.mktemp("tls"))
