"""POP3 test fixtures: real `mailyard serve` processes shared by a module."""

from __future__ import annotations

import pytest
from pop3_helpers import start_server


@pytest.fixture(scope="module")
def pop3_server(tmp_path_factory, tls_certs):
    """A server with pop3 (STLS) and pop3s for the whole module; loopback may log in plainly."""
    srv = start_server(tmp_path_factory.mktemp("pop3"), tls_certs)
    yield srv
    try:
        srv.stop()
    except AssertionError:
        srv.kill()
