"""Fixtures of the end-to-end tests (helpers live in e2e_support, importable by tests)."""

from e2e_support import pipeline  # noqa: F401
