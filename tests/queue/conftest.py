"""Fixtures for these tests; the helpers live in queue_support, which tests import."""

from queue_support import *
