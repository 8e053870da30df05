"""Helpers shared by the POP3 tests: servers, users, mailboxes, sample messages."""

from __future__ import annotations

import itertools
import poplib

from harness import MailyardServer

_users = itertools.count(1)
PASSWORD = "correct horse"


def start_server(root, tls_certs, pop3_keys: str = "") -> MailyardServer:
    toml = tls_certs.toml() + "\n[pop3]\nauth_failure_delay = 0.0\n" + pop3_keys
    return MailyardServer(root=root, services={"pop3", "pop3s"}, domains=["example.test"],
                          toml=toml).start()


def new_user(srv: MailyardServer, messages=()) -> tuple[str, list[int]]:
    """A fresh user on `srv` whose INBOX holds `messages` (delivered through the store)."""
    address = f"user{next(_users)}@example.test"
    srv.add_user(address, PASSWORD)
    return address, deliver(srv, address, messages)


def deliver(srv: MailyardServer, address: str, messages) -> list[int]:
    from mailyard.maildir import MailStore

    store = MailStore(srv.maildir(address))
    return [store.deliver(m) for m in messages]


def login(srv: MailyardServer, address: str) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=30)
    client.user(address)
    client.pass_(PASSWORD)
    return client


def sample_message(n: int, body_lines: int = 5, eol: bytes = b"\r\n") -> bytes:
    lines = [b"From: sender@example.net", b"To: someone@example.test",
             b"Subject: message %d" % n, b"Message-ID: <%d@example.net>" % n, b""]
    lines += [b"line %d of message %d" % (i, n) for i in range(body_lines)]
    return eol.join(lines) + eol
