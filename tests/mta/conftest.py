"""MTA test fixtures: the content-filter sink."""

from __future__ import annotations

import pytest

from .peers import Sink


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.stop()
