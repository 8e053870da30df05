"""ManageSieve protocol core (RFC 5804) without sockets: byte-exact transcripts and fuzz."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.sieve.managesieve.session import (
    Authenticate,
    Close,
    Send,
    Session,
    SessionConfig,
    StartTls,
)
from mailyard.sieve.managesieve.wire import CommandReader, WireError
from mailyard.sieve.storage import ScriptStore

USERS = {("alice@example.test", "secret"): "alice@example.test"}


def plain(login: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{login}\0{password}".encode()).decode()


class Driver:
    """Feeds a Session and carries out its events the way the server does."""

    def __init__(self, tmp_path, **config):
        defaults = {"plaintext_allowed": True}
        defaults.update(config)
        self.session = Session(SessionConfig(**defaults), lambda user: ScriptStore(
            tmp_path, user, max_scripts=3, max_script_size=200))
        self.closed = False
        self.tls_requests = 0

    def greeting(self) -> bytes:
        return self.session.greeting()

    def send(self, data: bytes) -> bytes:
        return self._carry(self.session.receive_data(data))

    def _carry(self, events) -> bytes:
        out = b""
        events = list(events)
        while events:
            ev = events.pop(0)
            if isinstance(ev, Send):
                out += ev.data
            elif isinstance(ev, Close):
                self.closed = True
            elif isinstance(ev, StartTls):
                self.tls_requests += 1
                events = self.session.tls_started() + events
            elif isinstance(ev, Authenticate):
                events = self.session.auth_result(USERS.get((ev.login, ev.password))) + events
        return out

    def login(self) -> None:
        reply = self.send(b'AUTHENTICATE "PLAIN" "' + plain("alice@example.test",
                                                             "secret").encode() + b'"\r\n')
        assert reply == b'OK "Logged in."\r\n'


def test_greeting_lists_capabilities(tmp_path):
    text = Driver(tmp_path).greeting().decode()
    lines = text.split("\r\n")
    assert lines[0] == '"IMPLEMENTATION" "mailyard"'
    assert '"SASL" "PLAIN"' in lines
    assert '"STARTTLS"' in lines
    assert '"VERSION" "1.0"' in lines
    assert '"MAXREDIRECTS" "4"' in lines
    sieve = next(line for line in lines if line.startswith('"SIEVE"'))
    for ext in ("fileinto", "vacation", "variables", "imap4flags", "include", "regex"):
        assert ext in sieve.split('"')[3].split()
    assert lines[-2] == 'OK "mailyard ManageSieve ready."'


TRANSCRIPT = [
    (b"LISTSCRIPTS\r\n", b'NO "Authenticate first."\r\n'),
    (b"LOGIN\r\n", b'NO "Unknown command LOGIN."\r\n'),
    ("LOGIN", None),
    (b'PUTSCRIPT "main" {26+}\r\nrequire "fileinto";\r\nkeep;\r\n',
     b'OK "Putscript completed."\r\n'),
    (b'PUTSCRIPT "bad" "keep;\x00"\r\n', b'NO "control character in quoted string"\r\n'),
    (b'PUTSCRIPT "bad" {16+}\r\nkeep;\r\n\r\n  frob;\r\n',
     b'NO "bad: line 3, column 3: unknown command \'frob\'"\r\n'),
    (b"LISTSCRIPTS\r\n", b'"main"\r\nOK "Listscripts completed."\r\n'),
    (b'SETACTIVE "main"\r\n', b'OK "Setactive completed."\r\n'),
    (b"LISTSCRIPTS\r\n", b'"main" ACTIVE\r\nOK "Listscripts completed."\r\n'),
    (b'GETSCRIPT "main"\r\n',
     b'{26}\r\nrequire "fileinto";\r\nkeep;\r\nOK "Getscript completed."\r\n'),
    (b'GETSCRIPT "nope"\r\n', b'NO (NONEXISTENT) "there is no script named \'nope\'"\r\n'),
    (b'DELETESCRIPT "main"\r\n', b'NO (ACTIVE) "you may not delete the active script"\r\n'),
    (b'RENAMESCRIPT "main" "primary"\r\n', b'OK "Renamescript completed."\r\n'),
    (b"LISTSCRIPTS\r\n", b'"primary" ACTIVE\r\nOK "Listscripts completed."\r\n'),
    (b'CHECKSCRIPT "keep;"\r\n', b'OK "Script is valid."\r\n'),
    (b'CHECKSCRIPT "fileinto \\"x\\";"\r\n',
     (b'NO "script: line 1, column 1: command \'fileinto\' requires the \'fileinto\' extension '
     b'(add: require \\"fileinto\\";)"\r\n')),
    (b'HAVESPACE "x" 100\r\n', b'OK "Putscript would succeed."\r\n'),
    (b'HAVESPACE "x" 1000\r\n', b'NO (QUOTA/MAXSIZE) "scripts may be at most 200 bytes"\r\n'),
    (b'NOOP "tag-1"\r\n', b'OK (TAG "tag-1") "Done."\r\n'),
    (b'NOOP\r\n', b'OK "Done."\r\n'),
    (b'PUTSCRIPT "a" "keep;"\r\nPUTSCRIPT "b" "keep;"\r\nPUTSCRIPT "c" "keep;"\r\n',
     (b'OK "Putscript completed."\r\nOK "Putscript completed."\r\n'
     b'NO (QUOTA/MAXSCRIPTS) "at most 3 scripts"\r\n')),
    (b'PUTSCRIPT "../escape" "keep;"\r\n',
     b'NO "script names must not contain \'/\' or \'\\\\\' or start with \'.\'"\r\n'),
    (b'SETACTIVE ""\r\n', b'OK "Setactive completed."\r\n'),
    (b'DELETESCRIPT "primary"\r\n', b'OK "Deletescript completed."\r\n'),
    (b'RENAMESCRIPT "a" "b"\r\n', b'NO (ALREADYEXISTS) "a script named \'b\' already exists"\r\n'),
    (b'SETACTIVE\r\n', b'NO "Wrong arguments for SETACTIVE."\r\n'),
    (b'UNAUTHENTICATE\r\n', b'OK "Unauthenticate completed."\r\n'),
    (b"LISTSCRIPTS\r\n", b'NO "Authenticate first."\r\n'),
    (b"LOGOUT\r\n", b'OK "Logout completed."\r\n'),
]


def test_transcript(tmp_path):
    driver = Driver(tmp_path)
    driver.greeting()
    for sent, expected in TRANSCRIPT:
        if sent == "LOGIN":
            driver.login()
            continue
        assert driver.send(sent) == expected, sent
    assert driver.closed


def test_authenticate_with_continuation(tmp_path):
    driver = Driver(tmp_path)
    assert driver.send(b'AUTHENTICATE "PLAIN"\r\n') == b'""\r\n'
    token = plain("alice@example.test", "secret").encode()
    assert driver.send(b"{%d+}\r\n" % len(token) + token + b"\r\n") == b'OK "Logged in."\r\n'


def test_authenticate_cancel_and_failures(tmp_path):
    driver = Driver(tmp_path)
    assert driver.send(b'AUTHENTICATE "PLAIN"\r\n') == b'""\r\n'
    assert driver.send(b'"*"\r\n') == b'NO "Authentication cancelled."\r\n'
    assert driver.send(b'AUTHENTICATE "PLAIN" "!!!"\r\n') == b'NO "Malformed PLAIN response."\r\n'
    assert driver.send(b'AUTHENTICATE "PLAIN" "' + plain("alice@example.test", "x", "bob")
                       .encode() + b'"\r\n') == b'NO "Authorization identity must match."\r\n'
    assert driver.send(b'AUTHENTICATE "DIGEST-MD5"\r\n') == \
        b'NO "Unsupported mechanism DIGEST-MD5."\r\n'
    bad = b'AUTHENTICATE "PLAIN" "' + plain("alice@example.test", "wrong").encode() + b'"\r\n'
    assert driver.send(bad) == b'NO "Authentication failed."\r\n'
    assert driver.send(bad) == b'NO "Authentication failed."\r\n'
    assert driver.send(bad) == b'BYE "Too many authentication failures."\r\n'
    assert driver.closed


def test_plaintext_refused_without_tls_on_remote_connections(tmp_path):
    driver = Driver(tmp_path, plaintext_allowed=False)
    assert b'"SASL" ""' in driver.greeting()
    reply = driver.send(b'AUTHENTICATE "PLAIN" "' + plain("alice@example.test", "secret")
                        .encode() + b'"\r\n')
    assert reply == b'NO (ENCRYPT-NEEDED) "Use STARTTLS before AUTHENTICATE PLAIN."\r\n'
    reply = driver.send(b"STARTTLS\r\n")
    assert reply.startswith(b'OK "Begin TLS negotiation now."\r\n"IMPLEMENTATION"')
    assert b'"SASL" "PLAIN"' in reply and b'"STARTTLS"' not in reply
    assert driver.tls_requests == 1
    driver.login()


def test_starttls_discards_pipelined_plaintext(tmp_path):
    # Command injection: what was sent before the handshake must not run after it.
    driver = Driver(tmp_path)
    session = driver.session
    events = session.receive_data(b"STARTTLS\r\nLOGOUT\r\n")
    assert isinstance(events[-1], StartTls)
    after = session.tls_started()
    assert all(b"Logout" not in e.data for e in after if isinstance(e, Send))
    assert not session.closed


def test_auth_pipelined_commands_wait_for_the_result(tmp_path):
    driver = Driver(tmp_path)
    session = driver.session
    events = session.receive_data(b'AUTHENTICATE "PLAIN" "' + plain(
        "alice@example.test", "secret").encode() + b'"\r\nLISTSCRIPTS\r\n')
    assert events == [Authenticate("alice@example.test", "secret")]
    out = session.auth_result("alice@example.test")
    assert b"".join(e.data for e in out) == (b'OK "Logged in."\r\n'
                                             b'OK "Listscripts completed."\r\n')


def test_oversized_literal_is_skipped_and_refused(tmp_path):
    driver = Driver(tmp_path)
    driver.login()
    big = b"x" * 5000
    driver.session.reader.max_literal = 1000
    reply = driver.send(b'PUTSCRIPT "big" {5000+}\r\n' + big + b"\r\nNOOP\r\n")
    assert reply == b'NO (QUOTA/MAXSIZE) "literal too large"\r\nOK "Done."\r\n'


def test_line_without_end_is_refused(tmp_path):
    driver = Driver(tmp_path)
    reply = driver.send(b"NOOP " + b"a" * 20000)
    assert reply == b'BYE "line too long"\r\n'
    assert driver.closed


def test_byte_at_a_time(tmp_path):
    driver = Driver(tmp_path)
    driver.login()
    data = b'PUTSCRIPT "s" {5+}\r\nkeep;\r\nGETSCRIPT "s"\r\n'
    out = b"".join(driver.send(data[i:i + 1]) for i in range(len(data)))
    assert out == b'OK "Putscript completed."\r\n{5}\r\nkeep;\r\nOK "Getscript completed."\r\n'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_reader_only_returns_commands_or_errors(data):
    reader = CommandReader(max_literal=100)
    for item in reader.feed(data):
        assert isinstance(item, WireError) or item.name.isupper() or item.name == ""


@pytest.mark.parametrize("state", ["nonauth", "auth"])
@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.one_of(st.binary(max_size=60), st.sampled_from([
    b"PUTSCRIPT \"a\" {3+}\r\nab", b"\r\n", b"GETSCRIPT \"a\"\r\n", b"AUTHENTICATE \"PLAIN\"\r\n",
    b"{999999999+}\r\n", b"\"*\"\r\n", b"STARTTLS\r\n", b"SETACTIVE \"a\"\r\n",
    b"HAVESPACE \"a\" 99999999999\r\n"])), max_size=10))
def test_fuzz_session_in_each_state(tmp_path_factory, state, data):
    driver = Driver(tmp_path_factory.mktemp("fuzz"))
    if state == "auth":
        driver.login()
    for chunk in data:
        if driver.closed:
            break
        out = driver.send(chunk)
        assert isinstance(out, bytes)


def test_account_store_failure_is_trylater(tmp_path):
    driver = Driver(tmp_path)
    events = driver.session.receive_data(b'AUTHENTICATE "PLAIN" "' + plain(
        "alice@example.test", "secret").encode() + b'"\r\nNOOP\r\n')
    assert isinstance(events[0], Authenticate)
    out = driver.session.auth_unavailable()
    assert b"".join(e.data for e in out) == (
        b'NO (TRYLATER) "Authentication is unavailable, try later."\r\nOK "Done."\r\n')
    assert driver.session.user is None
