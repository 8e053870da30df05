"""Shared fixtures for the spam tests: one engine per session on mailyard's own rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailyard.spam import SpamEngine

STOCK_RULES = Path("/usr/share/spamassassin")


@pytest.fixture(scope="session")
def builtin_engine() -> SpamEngine:
    return SpamEngine()


@pytest.fixture(scope="session")
def stock_engine() -> SpamEngine:
    if not (STOCK_RULES / "50_scores.cf").exists():
        pytest.skip("Debian's spamassassin rules are not installed")
    return SpamEngine(rules_dirs=[STOCK_RULES])
