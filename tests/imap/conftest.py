"""Fixtures for the IMAP tests: a real mailyard serving imap/imaps with one user."""

from __future__ import annotations

import imaplib

import pytest

USER = "alice@example.test"
PASSWORD = "wonderland"


@pytest.fixture
def imap_server(mailyard_server):
    srv = mailyard_server(services={"imap", "imaps"}, domains=["example.test"])
    srv.add_user(USER, PASSWORD)
    return srv


@pytest.fixture
def store(imap_server):
    """The user's Maildir store, through the maildir API (what LMTP delivery uses)."""
    from mailyard.maildir import MailStore

    return MailStore(imap_server.maildir(USER))


@pytest.fixture
def client(imap_server):
    """A logged-in imaplib client."""
    conn = imaplib.IMAP4("127.0.0.1", imap_server.port("imap"))
    conn.login(USER, PASSWORD)
    yield conn
    try:
        conn.logout()
    except Exception:
        pass


def message(subject: str = "hello", body: str = "Hello world\r\n", sender: str =
            "Bob <bob@example.org>", extra: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: {USER}\r\nSubject: {subject}\r\n"
            f"Date: Mon, 7 Feb 2024 10:00:00 +0100\r\nMessage-ID: <{subject.replace(' ', '.')}"
            f"@example.org>\r\n{extra}\r\n{body}").encode()
