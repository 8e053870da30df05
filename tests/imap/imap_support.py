"""Fixtures for the IMAP tests: one real mailyard (imap + imaps) per module, a fresh user per
test, the user's Maildir through the maildir API, and logged-in imaplib clients."""

from __future__ import annotations

import imaplib
import itertools

import pytest
from harness import MailyardServer

PASSWORD = "wonderland"
_counter = itertools.count()


@pytest.fixture(scope="module")
def imap_server(tmp_path_factory):
    srv = MailyardServer(root=tmp_path_factory.mktemp("imap"), services={"imap", "imaps"},
                         domains=["example.test"])
    srv.start()
    yield srv
    try:
        srv.stop()
    except AssertionError:
        srv.kill()


@pytest.fixture(scope="module")
def accounts(imap_server):
    """The server's account store, opened in-process (the same SQLite file the server reads;
    much faster than a `mailyard user add` subprocess per test)."""
    from mailyard.accounts import AccountStore

    acc = AccountStore(imap_server.data_dir / "accounts.sqlite3", imap_server.data_dir,
                       ["example.test"])
    yield acc
    acc.close()


@pytest.fixture
def user(accounts) -> str:
    address = f"user{next(_counter)}@example.test"
    accounts.add_user(address, PASSWORD)
    return address


@pytest.fixture
def store(imap_server, user):
    """The user's Maildir store, through the maildir API (what LMTP delivery uses)."""
    from mailyard.maildir import MailStore

    return MailStore(imap_server.maildir(user))


@pytest.fixture
def connect(imap_server, user):
    """Factory for logged-in imaplib clients (closed at the end of the test)."""
    clients = []

    def factory(login: bool = True) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", imap_server.port("imap"))
        if login:
            conn.login(user, PASSWORD)
        clients.append(conn)
        return conn

    yield factory
    for conn in clients:
        try:
            conn.logout()
        except Exception:
            pass


def message(subject: str = "hello", body: str = "Hello world\r\n",
            sender: str = "Bob <bob@example.org>", extra: str = "",
            date: str = "Wed, 7 Feb 2024 10:00:00 +0100") -> bytes:
    return (f"From: {sender}\r\nTo: someone@example.test\r\nSubject: {subject}\r\n"
            f"Date: {date}\r\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\r\n"
            f"{extra}\r\n{body}").encode()
