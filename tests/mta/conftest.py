"""MTA test fixtures: the content-filter sink."""

from __future__ import annotations

import pytest

from .peers import Sink, with_quiet_dns


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def module_sink():
    s = Sink()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def module_server(tmp_path_factory):
    """Factory for servers shared by a module's tests (started once, stopped at the end)."""
    from harness import MailyardServer

    servers = []

    def factory(services=("smtp",), toml: str = "", users=("alice@example.test",),
                password: str = "secret") -> MailyardServer:
        srv = MailyardServer(root=tmp_path_factory.mktemp("srv"), services=set(services),
                             domains=["example.test"], toml=with_quiet_dns(toml))
        servers.append(srv)
        srv.start()
        for user in users:
            srv.add_user(user, password)
        return srv

    yield factory
    for srv in servers:
        try:
            srv.stop()
        except AssertionError:
            srv.kill()
