"""Fixtures for these tests; the helpers live in imap_support, which tests import."""

from imap_support import *
